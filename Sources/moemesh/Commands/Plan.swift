import ArgumentParser
import GRPCCore
import MoECoordinator
import MoECore
import MoEModel
import MoEPolicy
import MoEProto
import MoEServing
import MoEStatusViews

#if canImport(Glibc)
    import Glibc
#endif
#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// `moemesh plan`: expert groups and replica counts from the mesh's telemetry (see `PlacementPlanner`).
struct Plan: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Plan expert groups and replicas from the coordinator's demand and co-activation telemetry.",
        discussion: """
            Experts chosen together most often share a process (at most --experts-per-group of one layer), so that a \
            token fans out to fewer services; hot groups get more replicas while the nodes' memory allows (EPLB), \
            placed on the least-loaded node with room. Reads a running coordinator (--coordinator) or a saved \
            `moemesh status --json` (--status). Prints each group as the --experts selection `moemesh expert` takes, \
            and writes the plan (--out) for `moemesh k8s render --plan`.
            """)

    @Option(help: "Model folder (config.json + *.safetensors): its layers and expert sizes.") var model: String
    @Option(help: "A running coordinator to read the telemetry from, HOST:PORT.") var coordinator: ServiceEndpoint?
    @Option(help: "A saved `moemesh status --json` to read the telemetry from instead.") var status: String?
    @Option(help: "Nodes to place replicas on.") var nodes: Int = 4
    @Option(help: "Memory for expert weights per node, in GiB.") var nodeMemoryGib: Double = 16
    @Option(help: "Most experts of one layer per process.") var expertsPerGroup: Int = 2
    @Option(help: "How the weights will be stored: f32, bf16 or int8 (sizes the replicas).")
    var precision: WeightPrecision = .f32
    @Option(help: "Write the plan (JSON) here, for `moemesh k8s render --plan`.") var out: String?
    @Flag(
        help:
            "Apply the plan to the mesh of --coordinator: its groups start, and once they serve, the groups it leaves out drain and stop."
    )
    var apply = false
    @Option(help: "Seconds --apply waits for the new groups to serve (the old ones keep serving if they do not).")
    var applyTimeoutS: Int = 120
    @Flag(help: "Print the plan as JSON instead of a table.") var json = false

    @OptionGroup var token: TokenOptions
    @OptionGroup var tls: TLSOptions

    func run() async throws {
        guard (self.coordinator == nil) != (self.status == nil) else {
            throw ValidationError("give one of --coordinator HOST:PORT or --status FILE")
        }
        guard !self.apply || self.coordinator != nil else {
            throw ValidationError("--apply needs --coordinator HOST:PORT: the mesh to apply the plan to")
        }
        guard self.applyTimeoutS >= 1 else {
            throw ValidationError("--apply-timeout-s: expected at least 1, got \(self.applyTimeoutS)")
        }
        guard self.nodeMemoryGib > 0 else {
            throw ValidationError("--node-memory-gib: expected a positive number, got \(self.nodeMemoryGib)")
        }
        let checkpoint = try MoECheckpoint(path: self.model)
        let telemetry: PlacementTelemetry
        if let path = self.status {
            let report: StatusReport
            do { report = try StatusReport.decode(json: try FileSystem.readFile(path)) } catch let error as ModelError {
                throw ValidationError("--status: \(error)")
            } catch {
                throw ValidationError("--status \(path): not a `moemesh status --json` object (\(error))")
            }
            do { telemetry = try report.placementTelemetry() } catch {
                throw ValidationError("--status \(path): \(error)")
            }
        } else {
            telemetry = PlacementTelemetry(try await self.readStatus(self.coordinator!))
        }
        var plan: PlacementPlanner.Plan
        do {
            let weights = self.precision.bytesPerWeight
            let bytesPerExpert = checkpoint.layers.map { 3 * $0.hiddenSize * $0.intermediateSize * weights }.max() ?? 0
            let shared = Dictionary(
                uniqueKeysWithValues: checkpoint.layers.compactMap { layer in
                    layer.sharedExpert.map { (layer.name, 3 * layer.hiddenSize * $0.intermediateSize * weights) }
                })
            plan = try PlacementPlanner.plan(
                layers: checkpoint.layers, bytesPerExpert: bytesPerExpert, sharedBytes: shared, telemetry: telemetry,
                constraints: .init(
                    nodes: self.nodes, nodeMemoryBytes: Int(self.nodeMemoryGib * 1_073_741_824),
                    expertsPerGroup: self.expertsPerGroup))
        } catch {
            throw ValidationError("\(error)")
        }
        plan.servicesPerTokenNow = PlacementPlanner.servicesPerTokenNow(layers: checkpoint.layers, telemetry: telemetry)
        let encoded = try PlanFile.encode(plan)
        if let out = self.out { try FileSystem.writeFile(out, chunks: [Array(encoded.utf8)]) }
        if self.json {
            print(encoded)
            if self.apply { try await self.applyPlan(plan, to: self.coordinator!) }
            return
        }
        print("GROUP  REPLICAS  LOAD ROWS/S  MiB  --experts")
        for group in plan.groups {
            print(
                "\(group.name)  \(group.replicas)  \(DecimalFormat.fixed(group.load, 1))  \(group.bytes >> 20)  "
                    + "'\(group.selection)'")
        }
        print(
            "co-activated pairs inside one group: \(DecimalFormat.fixed(100 * plan.pairsInsideGroups, 1))% "
                + "(consecutive groups of \(self.expertsPerGroup): "
                + "\(DecimalFormat.fixed(100 * plan.pairsInsideConsecutiveGroups, 1))%); load per replica balancedness "
                + DecimalFormat.fixed(plan.replicaBalancedness, 2))
        if let now = plan.servicesPerTokenNow, let planned = plan.servicesPerToken {
            print(
                "expert services per token per layer: \(DecimalFormat.fixed(now, 3)) now, "
                    + "\(DecimalFormat.fixed(planned, 3)) with the plan")
        }
        for (index, groups) in plan.nodes.enumerated() { print("node \(index): \(groups.joined(separator: ", "))") }
        if let out = self.out { print("wrote \(out)") }
        if self.apply { try await self.applyPlan(plan, to: self.coordinator!) }
    }

    private func applyPlan(_ plan: PlacementPlanner.Plan, to endpoint: ServiceEndpoint) async throws {
        let response: Moemesh_V1_ApplyPlanResponse
        do {
            response = try await CoordinatorClient.with(
                endpoint: endpoint,
                serving: try self.tls.appliedToClient(self.token.applied(to: ServingConfiguration()))
            ) {
                try await $0.applyPlan(
                    plan.groups.map { ($0.name, $0.selection, $0.replicas) }, timeout: .seconds(self.applyTimeoutS))
            }
        } catch let error as RPCError {
            throw CommandFailure("coordinator at \(endpoint) refused the plan: \(error.code): \(error.message)")
        }
        let summary =
            "applied: \(response.started.count) groups started, \(response.kept.count) kept, "
            + "\(response.draining.count) replicas of replaced groups draining"
        // With --json, standard output holds the plan alone.
        if self.json {
            _ = (summary + "\n").withCString { write(STDERR_FILENO, $0, strlen($0)) }
        } else {
            print(summary)
        }
    }

    private func readStatus(_ endpoint: ServiceEndpoint) async throws -> CoordinatorStatus {
        do {
            return try await CoordinatorClient.with(
                endpoint: endpoint,
                serving: try self.tls.appliedToClient(self.token.applied(to: ServingConfiguration()))
            ) { try await $0.status() }
        } catch let error as RPCError {
            throw CommandFailure("coordinator at \(endpoint) answered \(error.code): \(error.message)")
        }
    }
}

/// The plan file `moemesh plan --out` writes and `moemesh k8s render --plan` reads.
enum PlanFile {
    static func encode(_ plan: PlacementPlanner.Plan) throws -> String {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        return String(decoding: try encoder.encode(plan), as: UTF8.self)
    }

    static func read(_ path: String) throws -> PlacementPlanner.Plan {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        do {
            return try decoder.decode(PlacementPlanner.Plan.self, from: Data(try FileSystem.readFile(path)))
        } catch let error as ModelError {
            throw ValidationError("--plan: \(error)")
        } catch {
            throw ValidationError("--plan \(path): not a plan written by `moemesh plan --out` (\(error))")
        }
    }
}
