import MoECore
import ArgumentParser
import GRPCCore
import MoECoordinator
import MoEServing
import MoEStatusViews

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what the coordinator sees: expert groups, replicas, load, state, recent scaling decisions.")

    @Option(help: "The coordinator, HOST:PORT.")
    var coordinator: ServiceEndpoint = ServiceEndpoint(host: "127.0.0.1", port: CoordinatorConfiguration.defaultPort)

    @Flag(help: "Print one JSON object instead of tables.")
    var json = false

    @Option(help: "Refresh every N seconds until interrupted (tables only).")
    var watch: Double?

    @OptionGroup var token: TokenOptions
    @OptionGroup var tls: TLSOptions

    func run() async throws {
        do {
            try await CoordinatorClient.with(
                endpoint: self.coordinator,
                serving: try self.tls.appliedToClient(self.token.applied(to: ServingConfiguration()))
            ) { client in
                repeat {
                    let report = StatusReport(try await client.status())
                    if self.json {
                        print(try report.json())
                    } else {
                        if self.watch != nil { print("\u{1B}[H\u{1B}[2J", terminator: "") }
                        print(report.table())
                    }
                    if let watch = self.watch, !self.json {
                        try await Task.sleep(for: .milliseconds(Int64(watch * 1000)))
                    }  // --watch: periodic
                } while self.watch != nil && !self.json
            }
        } catch let error as RPCError {
            throw CommandFailure("coordinator at \(self.coordinator) answered \(error.code): \(error.message)")
        }
    }
}

struct Admin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Admin actions on the coordinator: prune an expert from routing, restore it, drain a replica.",
        subcommands: [Prune.self, Restore.self, Drain.self])

    struct Target: ParsableArguments {
        @Option(help: "The coordinator, HOST:PORT.")
        var coordinator: ServiceEndpoint = ServiceEndpoint(
            host: "127.0.0.1", port: CoordinatorConfiguration.defaultPort)

        @OptionGroup var token: TokenOptions
        @OptionGroup var tls: TLSOptions

        func run<Result: Sendable>(_ body: (CoordinatorClient) async throws -> Result) async throws -> Result {
            do {
                return try await CoordinatorClient.with(
                    endpoint: self.coordinator,
                    serving: try self.tls.appliedToClient(self.token.applied(to: ServingConfiguration())), body)
            } catch let error as RPCError {
                throw CommandFailure("coordinator at \(self.coordinator) answered \(error.code): \(error.message)")
            }
        }
    }

    struct Prune: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Mask an expert out of routing: its tokens go to the next-best experts, weights renormalised.")

        @OptionGroup var target: Target
        @Option(help: "MoE layer name.") var layer: String
        @Option(help: "Expert index.") var expert: Int

        func run() async throws {
            let pruned = try await self.target.run {
                try await $0.setPruned(.init(layer: self.layer, expert: self.expert), pruned: true)
            }
            print("pruned: " + pruned.map(\.description).joined(separator: ", "))
        }
    }

    struct Restore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Bring a pruned expert back into routing.")

        @OptionGroup var target: Target
        @Option(help: "MoE layer name.") var layer: String
        @Option(help: "Expert index.") var expert: Int

        func run() async throws {
            let pruned = try await self.target.run {
                try await $0.setPruned(.init(layer: self.layer, expert: self.expert), pruned: false)
            }
            print(
                pruned.isEmpty
                    ? "no expert is pruned" : "still pruned: " + pruned.map(\.description).joined(separator: ", "))
        }
    }

    struct Drain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Drain a replica: routers send it no new work, it finishes what it has, then the scaler stops it."
        )

        @OptionGroup var target: Target
        @Option(help: "Replica id (see moemesh status).") var replica: String

        func run() async throws {
            let replica = try await self.target.run { try await $0.drain(replica: self.replica) }
            print("draining \(replica.replicaID) at \(replica.endpoint) (group \(replica.group))")
        }
    }
}
