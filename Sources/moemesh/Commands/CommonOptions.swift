import ArgumentParser
import Logging
import MoECore
import MoEServing

struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func bootstrap(label: String) throws -> Logger {
        guard let level = Logger.Level(rawValue: self.logLevel) else {
            throw ValidationError(
                "--log-level: expected one of trace, debug, info, notice, warning, error, critical, got '\(self.logLevel)'"
            )
        }
        bootstrapLogging(level: level)
        return Logger(label: label)
    }
}

extension ServiceEndpoint: ExpressibleByArgument {
    public init?(argument: String) { self.init(argument) }
}

extension DType: ExpressibleByArgument {}

/// An error printed as its message alone (no usage text).
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// `--http-port`: plain HTTP for operators (`/metrics`; on the coordinator also the status page).
struct HTTPOptions: ParsableArguments {
    @Option(
        help:
            "Serve /metrics (Prometheus) over HTTP on this port (0: any free port, printed as 'http listening on HOST:PORT'); the coordinator also serves its status page (/) and /status.json there. Default: none."
    )
    var httpPort: Int?

    /// The process's metrics go to the Prometheus registry served at `/metrics`.
    func bootstrapMetrics() { PrometheusExport.bootstrap() }

    /// An HTTP service with `/metrics` alone (routers and experts), if a port was given.
    func metricsEndpoint(host: String, logger: Logger) -> HTTPEndpoint? {
        guard let port = self.httpPort else { return nil }
        let (path, route) = PrometheusExport.route()
        return HTTPEndpoint(
            host: host, port: port, routes: [path: route], logger: logger,
            onListening: { ReadyLine.print(role: "http", endpoint: $0) })
    }
}
