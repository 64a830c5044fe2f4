import CoreMetrics
import Prometheus
import Synchronization

/// The process's metrics, in one Prometheus registry: `bootstrap()` makes it swift-metrics' global factory, and
/// `route` serves it as `/metrics`.
public enum PrometheusExport {
    public static let registry = PrometheusCollectorRegistry()

    private static let bootstrapped = Mutex(false)

    /// Makes the registry the process's metrics factory (once; later calls do nothing).
    public static func bootstrap() {
        let first = self.bootstrapped.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        var factory = PrometheusMetricsFactory(registry: self.registry)
        // Expert calls and layers take from tens of microseconds to seconds.
        factory.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
        ]
        MetricsSystem.bootstrap(factory)
    }

    /// `/metrics` of `registry`, in the Prometheus text format.
    public static func route(_ registry: PrometheusCollectorRegistry = Self.registry) -> (
        String, @Sendable () async -> HTTPEndpoint.Response
    ) {
        ("/metrics", { HTTPEndpoint.Response(contentType: "text/plain; version=0.0.4", body: registry.emitToBuffer()) })
    }
}
