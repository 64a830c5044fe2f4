import Logging
import OTel
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

/// Traces exported over OTLP by swift-otel when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the rest of the standard `OTEL_*` variables apply
/// (`OTEL_EXPORTER_OTLP_PROTOCOL` grpc or http/protobuf, `OTEL_SERVICE_NAME`, ...). Logs and metrics stay with
/// swift-log (standard error) and Prometheus (`/metrics`).
enum Observability {
    /// The exporter's service, to run beside the role's, or nil when no endpoint is configured.
    static func tracingService(serviceName: String, logger: Logger) throws -> (any Service)? {
        let environment = ConfigurationSources.processEnvironment
        guard
            environment["OTEL_EXPORTER_OTLP_ENDPOINT"] != nil
                || environment["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] != nil
        else { return nil }
        var configuration = OTel.Configuration.default
        configuration.serviceName = environment["OTEL_SERVICE_NAME"] ?? serviceName
        configuration.logs.enabled = false
        configuration.metrics.enabled = false
        configuration.traces.enabled = true
        logger.info("exporting traces over OTLP", metadata: ["service": "\(configuration.serviceName)"])
        return try OTel.bootstrap(configuration: configuration)
    }
}
