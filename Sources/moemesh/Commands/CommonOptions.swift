import ArgumentParser
import Logging
import MoECore
import MoEServing

struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func bootstrap(label: String) throws -> Logger {
        guard let level = Logger.Level(rawValue: self.logLevel) else {
            throw ValidationError("--log-level: expected one of trace, debug, info, notice, warning, error, critical, got '\(self.logLevel)'")
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
