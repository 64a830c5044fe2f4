import ArgumentParser
import MoEBench
import MoECoordinator
import MoECore
import MoEModel
import MoEPolicy
import MoEStatusViews

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// `moemesh simulate`: the fleet simulator (`FleetSimulator`); its check against a real mesh is
/// `scripts/validate_simulator.py`.
struct Simulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Simulate a fleet: static placement, EPLB replication and the planner, with and without scale to zero.",
        discussion: """
            A discrete-event simulation of clients sending requests of --tokens tokens through --layers MoE layers \
            (one call per chosen expert, a hop each way, a FIFO of --slots-per-node slots per node), run through \
            PlacementPlanner and AutoscalePolicy, the code the coordinator runs. Per scenario: tokens/s, p50/p99 of \
            a token's latency through all layers, balancedness (mean/max rows per replica), services and calls per \
            token per layer, replicas and cold starts. Routing is Zipf-skewed with hidden teams of co-activated \
            experts, or recorded (--status: a saved `moemesh status --json`).
            """)

    @Option(help: "Nodes.") var nodes: Int = 64
    @Option(help: "Expert calls a node serves at once.") var slotsPerNode: Int = 8
    @Option(help: "How a node's jobs share its slots: fifo (each holds one until done) or shared (time slicing).")
    var nodeDiscipline: NodeDiscipline = .fifo
    @Option(help: "Spread of service times: 0 each job its mean, 1 exponential around it.") var serviceJitter: Double =
        0
    @Option(help: "Memory for expert weights per node, in GiB.") var nodeMemoryGib: Double = 80
    @Option(help: "MoE layers a request goes through.") var layers: Int = 4
    @Option(help: "Routed experts per layer.") var experts: Int = 1000
    @Option(help: "Experts per token.") var topK: Int = 8
    @Option(help: "Hidden size H.") var hidden: Int = 4096
    @Option(help: "Expert intermediate size I.") var intermediate: Int = 1536
    @Option(help: "Bytes per weight (2: bf16).") var weightBytes: Int = 2
    @Option(help: "Bytes per value on the wire.") var wireBytes: Int = 2
    @Option(help: "Most experts of one layer per group (process).") var expertsPerGroup: Int = 8
    @Option(help: "Redundant replicas of EPLB and the planner, as a share of the groups.") var extraReplicas: Double =
        0.125
    @Option(help: "An expert call's fixed cost, µs.") var callUs: Double = 150
    @Option(help: "An expert call's cost per row, µs.") var callRowUs: Double = 25
    @Option(help: "The router's fixed cost per layer of a request, µs.") var routerUs: Double = 60
    @Option(help: "The router's cost per token per layer, µs.") var routerTokenUs: Double = 4
    @Option(help: "A client's own work per layer of its request, µs (0: clients elsewhere).") var clientUs: Double = 0
    @Option(help: "A client's own work per token per layer, µs.") var clientTokenUs: Double = 0
    @Option(help: "Routers (client c calls router c mod N).") var routers: Int = 16
    @Option(help: "The routers' dynamic batching: on or off.") var batching: Switch = .on
    @Option(help: "Most tokens in one batch.") var batchMaxTokens: Int = 4096
    @Option(help: "How long a batch leader waits for more requests under concurrent load, µs.") var batchDelayUs:
        Double = 2000
    @Option(help: "Batches of one layer running at once per router.") var batchConcurrency: Int = 2
    @Option(help: "Run the router's and clients' work on this node's slots (a mesh on one machine); default: apart.")
    var routerNode: Int?
    @Option(help: "One-way latency of a hop, µs.") var hopUs: Double = 50
    @Option(help: "Bandwidth of a hop, Gbit/s.") var bandwidthGbps: Double = 100
    @Option(help: "Closed-loop clients.") var clients: Int = 2048
    @Option(help: "Tokens per request.") var tokens: Int = 8
    @Option(help: "Zipf exponent of expert popularity.") var zipf: Double = 1.0
    @Option(help: "Chance that a token's next expert is from its first expert's team.") var affinity: Double = 0.5
    @Option(help: "Experts per hidden team.") var teamSize: Int = 8
    @Option(help: "A saved `moemesh status --json` whose demand and co-activation drive the routing.")
    var status: String?
    @Option(help: "Tokens per layer counted for the planners' telemetry.") var telemetryTokens: Int = 20000
    @Option(help: "Simulated seconds before measuring.") var warmUpS: Double = 2
    @Option(help: "Simulated seconds measured.") var seconds: Double = 4
    @Option(help: "Seconds from a replica's start to serving.") var coldStartS: Double = 1
    @Option(help: "Seconds without demand before a group goes to zero.") var idleTimeoutS: Double = 2
    @Option(help: "Seconds a group is left alone after a change.") var cooldownS: Double = 1
    @Option(help: "Seconds between runs of the autoscaling policy.") var policyIntervalS: Double = 0.5
    @Option(help: "Seconds demand is averaged over.") var demandWindowS: Double = 2
    @Option(help: "Seed of the routing and of the shuffles.") var seed: UInt64 = 1
    @Option(help: "Placements to run, comma-separated: static, eplb, planner.") var placements: String =
        "static,eplb,planner"
    @Option(help: "Scale to zero: off, on or both.") var scaleToZero: ScaleToZero = .both
    @Flag(help: "Print one JSON array instead of a table.") var json = false

    enum ScaleToZero: String, ExpressibleByArgument, CaseIterable { case off, on, both }
    enum Switch: String, ExpressibleByArgument, CaseIterable { case on, off }

    func run() async throws {
        var model = FleetModel()
        model.nodes = self.nodes
        model.slotsPerNode = self.slotsPerNode
        model.discipline = self.nodeDiscipline
        model.serviceJitter = self.serviceJitter
        guard self.nodeMemoryGib > 0, self.nodeMemoryGib.isFinite else {
            throw ValidationError("--node-memory-gib: expected a positive number, got \(self.nodeMemoryGib)")
        }
        model.nodeMemoryBytes = Int(self.nodeMemoryGib * 1_073_741_824)
        model.layers = self.layers
        model.experts = self.experts
        model.topK = self.topK
        model.hiddenSize = self.hidden
        model.intermediateSize = self.intermediate
        model.weightBytes = self.weightBytes
        model.wireBytes = self.wireBytes
        model.expertsPerGroup = self.expertsPerGroup
        model.extraReplicaShare = self.extraReplicas
        model.call = ServiceTime(fixed: self.callUs * 1e-6, perRow: self.callRowUs * 1e-6)
        model.router = ServiceTime(fixed: self.routerUs * 1e-6, perRow: self.routerTokenUs * 1e-6)
        model.client = ServiceTime(fixed: self.clientUs * 1e-6, perRow: self.clientTokenUs * 1e-6)
        model.routers = self.routers
        model.batching =
            self.batching == .on
            ? Batching(
                maxTokens: self.batchMaxTokens, maxDelay: self.batchDelayUs * 1e-6,
                maxConcurrentBatches: self.batchConcurrency) : nil
        model.routerNode = self.routerNode
        model.hopLatency = self.hopUs * 1e-6
        model.bandwidth = self.bandwidthGbps * 1e9 / 8
        model.clients = self.clients
        model.tokensPerRequest = self.tokens
        model.routing = .zipf(exponent: self.zipf, affinity: self.affinity, teamSize: self.teamSize)
        model.telemetryTokens = self.telemetryTokens
        model.warmUp = self.warmUpS
        model.measured = self.seconds
        model.coldStart = self.coldStartS
        model.idleTimeout = self.idleTimeoutS
        model.cooldown = self.cooldownS
        model.policyInterval = self.policyIntervalS
        model.demandWindow = self.demandWindowS
        model.seed = self.seed
        if let path = self.status { try Self.record(path, into: &model) }
        let placements = try self.placements.split(separator: ",").map { name in
            guard let placement = FleetPlacement(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--placements: expected static, eplb or planner, got '\(name)'")
            }
            return placement
        }
        let zero: [Bool] = self.scaleToZero == .both ? [false, true] : [self.scaleToZero == .on]
        let scenarios = zero.flatMap { zero in placements.map { FleetScenario(placement: $0, scaleToZero: zero) } }
        let results = try await Self.simulate(model: model, scenarios: scenarios)
        if self.json {
            print(try FleetReport.json(results))
        } else {
            print(FleetReport.table(results))
        }
    }

    /// Runs the scenarios side by side (each is single-threaded and independent).
    static func simulate(model: FleetModel, scenarios: [FleetScenario]) async throws -> [FleetResult] {
        do {
            let simulator = try FleetSimulator(model: model)
            return try await withThrowingTaskGroup(of: (Int, FleetResult).self) { group in
                for (index, scenario) in scenarios.enumerated() {
                    group.addTask { (index, try simulator.run(scenario)) }
                }
                var results: [(Int, FleetResult)] = []
                for try await result in group { results.append(result) }
                return results.sorted { $0.0 < $1.0 }.map(\.1)
            }
        } catch let error as FleetSimulator.SimulationError {
            throw ValidationError(error.description)
        }
    }

    /// Routing, layers and experts from a saved status.
    static func record(_ path: String, into model: inout FleetModel) throws {
        let report: StatusReport
        do { report = try StatusReport.decode(json: try FileSystem.readFile(path)) } catch {
            throw ValidationError("--status \(path): not a `moemesh status --json` object (\(error))")
        }
        let telemetry: PlacementTelemetry
        do { telemetry = try report.placementTelemetry() } catch { throw ValidationError("--status \(path): \(error)") }
        let (demand, coactivation) = (telemetry.demand, telemetry.coactivation)
        let names = Set(demand.keys.map(\.layer)).union(coactivation.keys).sorted {
            (Int($0) ?? Int.max, $0) < (Int($1) ?? Int.max, $1)
        }
        let experts = max(
            coactivation.values.map(\.experts).max() ?? 0,
            (demand.keys.map(\.expert).max() ?? -1) + 1)
        guard !names.isEmpty, experts > 0 else {
            throw ValidationError("--status \(path): no routed experts with demand or co-activation")
        }
        model.layers = names.count
        model.experts = experts
        model.routing = .recorded(
            names.map { layer in
                TokenRouting.RecordedLayer(
                    demand: (0..<experts).map { demand[ExpertAddress(layer: layer, expert: $0)] ?? 0 },
                    coactivation: coactivation[layer] ?? Coactivation(experts: experts))
            })
    }
}

/// How `moemesh simulate` prints its results.
extension NodeDiscipline: ExpressibleByArgument {}

enum FleetReport {
    static func table(_ results: [FleetResult]) -> String {
        let baseline = results.first { $0.placement == .staticPlacement && !$0.scaleToZero }
        let rows = results.map { result in
            [
                result.scenario, DecimalFormat.fixed(result.tokensPerSecond, 0),
                baseline.map { DecimalFormat.fixed(result.tokensPerSecond / $0.tokensPerSecond, 2) + "×" } ?? "-",
                DecimalFormat.fixed(result.p50Ms, 2), DecimalFormat.fixed(result.p99Ms, 2),
                DecimalFormat.fixed(result.replicaBalancedness, 3), DecimalFormat.fixed(result.nodeBalancedness, 3),
                DecimalFormat.fixed(result.servicesPerToken, 2), DecimalFormat.fixed(result.callsPerToken, 2),
                "\(result.replicasAtStart)", DecimalFormat.fixed(result.meanReplicas, 1), "\(result.coldStarts)",
                DecimalFormat.fixed(result.runSeconds, 1),
            ]
        }
        return BenchReport.table(
            header: [
                "scenario", "tokens/s", "vs static", "p50 ms", "p99 ms", "replica bal", "node bal", "services/tok",
                "calls/tok", "replicas", "mean replicas", "cold starts", "run s",
            ], rows: rows)
    }

    static func json(_ results: [FleetResult]) throws -> String {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        return String(decoding: try encoder.encode(results), as: UTF8.self)
    }
}
