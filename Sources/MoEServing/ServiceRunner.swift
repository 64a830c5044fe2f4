import Logging
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Runs a role's services in one `ServiceGroup` until SIGTERM/SIGINT (or the parent's death, when
/// `parentPID` is given), then shuts them down gracefully.
public func runServiceGroup(services: [any Service], parentPID: Int32?, logger: Logger) async throws {
    var configurations = (services + [HeapTrimmer()]).map {
        ServiceGroupConfiguration.ServiceConfiguration(service: $0)
    }
    if let parentPID {
        configurations.append(
            .init(service: ParentWatchdog(parentPID: parentPID), successTerminationBehavior: .gracefullyShutdownGroup))
    }
    let group = ServiceGroup(
        configuration: ServiceGroupConfiguration(
            services: configurations, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
}

/// Sets up swift-log: human-readable lines on standard error at `level`.
public func bootstrapLogging(level: Logger.Level) {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
}
