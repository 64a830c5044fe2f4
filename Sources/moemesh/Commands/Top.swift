import MoECore
import ArgumentParser
import GRPCCore
import MoECoordinator
import MoEServing
import MoEStatusViews

struct Top: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "The coordinator's live view in the terminal: a heatmap of load (layer × expert), groups, replicas, decisions."
    )

    @Option(help: "The coordinator, HOST:PORT.")
    var coordinator: ServiceEndpoint = ServiceEndpoint(host: "127.0.0.1", port: CoordinatorConfiguration.defaultPort)

    @Option(help: "Seconds between refreshes.")
    var interval: Double = 1

    @Option(help: "Stop after this many refreshes (default: until interrupted).")
    var iterations: Int?

    @Flag(help: "No colours or screen clearing (for logs and pipes).")
    var plain = false

    @OptionGroup var token: TokenOptions
    @OptionGroup var tls: TLSOptions

    func run() async throws {
        do {
            try await CoordinatorClient.with(
                endpoint: self.coordinator,
                serving: try self.tls.appliedToClient(self.token.applied(to: ServingConfiguration()))
            ) { client in
                var shown = 0
                while self.iterations.map({ shown < $0 }) ?? true {
                    let report = StatusReport(try await client.status())
                    let screen =
                        report.heatmap(color: !self.plain) + "\n\n" + report.table(replicas: true, decisions: 6)
                    print((self.plain ? "" : "\u{1B}[H\u{1B}[2J") + screen)
                    shown += 1
                    if self.iterations.map({ shown < $0 }) ?? true {
                        try await Task.sleep(for: .milliseconds(Int64(self.interval * 1000)))  // periodic refresh
                    }
                }
            }
        } catch let error as RPCError {
            throw CommandFailure("coordinator at \(self.coordinator) answered \(error.code): \(error.message)")
        }
    }
}
