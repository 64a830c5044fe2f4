import Logging
import ServiceLifecycle
import UnixSignals

/// Reads a token file again on SIGHUP, and when it changes: a token added or revoked takes effect without a
/// restart. A bad file is logged and the tokens in force stay.
public struct AuthTokensReloader: Service {
    public let tokens: AuthTokens
    public let logger: Logger
    /// How often the file's modification time is checked.
    public let checkInterval: Duration

    public init(tokens: AuthTokens, logger: Logger, checkInterval: Duration = .seconds(1)) {
        self.tokens = tokens
        self.logger = logger
        self.checkInterval = checkInterval
    }

    public func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    for await _ in signals { self.reload(reason: "SIGHUP") }
                }
                group.addTask {
                    var seen = self.tokens.modified
                    while !Task.isCancelled {
                        // periodic: a file's change is no event a portable program can await
                        try? await Task.sleep(for: self.checkInterval)
                        let now = self.tokens.modified
                        if now?.tv_sec != seen?.tv_sec || now?.tv_nsec != seen?.tv_nsec {
                            seen = now
                            self.reload(reason: "the file changed")
                        }
                    }
                }
            }
        }
    }

    private func reload(reason: String) {
        if let error = self.tokens.reload() {
            self.logger.error(
                "token file not reloaded; the tokens in force stay",
                metadata: ["reason": "\(reason)", "error": "\(error)"])
        } else {
            self.logger.notice(
                "token file reloaded",
                metadata: [
                    "path": "\(self.tokens.path)", "reason": "\(reason)",
                    "tokens":
                        "\(self.tokens.counts.map { "\($0.key.rawValue): \($0.value)" }.sorted().joined(separator: ", "))",
                ])
        }
    }
}
