import MoECore
import MoEModel

/// Where replicas go at the start of a simulated run.
public enum FleetPlacement: String, Sendable, CaseIterable, Codable {
    /// Groups of consecutive experts, one replica each, dealt to the nodes in turn: no knowledge of the traffic.
    case staticPlacement = "static"
    /// The same groups; hot ones get the redundant replicas and replicas go to the least-loaded node
    /// (`PlacementPlanner` with `.consecutive` grouping).
    case eplb
    /// `PlacementPlanner`'s own plan: co-activation groups, then the same replicas and placement.
    case planner
}

/// One simulated run: a placement, with or without the coordinator's autoscaling (scale to zero included).
public struct FleetScenario: Sendable, Equatable, CustomStringConvertible {
    public var placement: FleetPlacement
    public var scaleToZero: Bool

    public init(placement: FleetPlacement, scaleToZero: Bool) {
        self.placement = placement
        self.scaleToZero = scaleToZero
    }

    public var description: String { self.placement.rawValue + (self.scaleToZero ? " + scale to zero" : "") }

    /// Every placement, without then with scale to zero.
    public static let all = [false, true].flatMap { zero in
        FleetPlacement.allCases.map { FleetScenario(placement: $0, scaleToZero: zero) }
    }
}

/// What one run measured, over its measured seconds.
public struct FleetResult: Sendable, Equatable, Codable {
    public var scenario: String
    public var placement: FleetPlacement
    public var scaleToZero: Bool
    public var tokensPerSecond: Double
    /// Latency of a token through every layer (its request's), p50 and p99, in milliseconds.
    public var p50Ms: Double
    public var p99Ms: Double
    /// `mean / max` of rows per serving replica, sampled each policy interval and averaged (the coordinator's
    /// figure); and of busy time per node over the run.
    public var replicaBalancedness: Double
    public var nodeBalancedness: Double
    /// Distinct expert groups (services) a token's experts sit in, per layer, and expert calls per token per layer.
    public var servicesPerToken: Double
    public var callsPerToken: Double
    /// Replicas at the start, on average over the run, and cold starts (a call that found its group at zero).
    public var replicasAtStart: Int
    public var meanReplicas: Double
    public var coldStarts: Int
    public var scalingDecisions: Int
    /// Co-activated pairs whose experts share a group, of all (the plan's figure).
    public var pairsInsideGroups: Double
    public var requests: Int
    /// Wall-clock seconds the run took.
    public var runSeconds: Double
}

/// The initial layout of a run: groups of global expert ids (`layer · experts + expert`) and their replicas' nodes.
struct FleetLayout {
    var groups: [(name: String, experts: [Int], bytes: Int)]
    var replicaNodes: [[Int]]
    var pairsInsideGroups: Double

    /// The layout of `placement` for the telemetry sampled from the fleet's routing.
    static func make(
        _ placement: FleetPlacement, model: FleetModel, demand: [[Double]], coactivation: [Coactivation]
    ) throws(PlacementPlanner.PlanError) -> FleetLayout {
        let layers = (0..<model.layers).map { layer in
            MoELayerSpec(
                name: String(layer), hiddenSize: model.hiddenSize, intermediateSize: model.intermediateSize,
                gate: TopKGate(numExperts: model.experts, topK: model.topK, renormalize: true))
        }
        let groupCount = model.layers * ((model.experts + model.expertsPerGroup - 1) / model.expertsPerGroup)
        let constraints = PlacementPlanner.Constraints(
            nodes: model.nodes, nodeMemoryBytes: model.nodeMemoryBytes, expertsPerGroup: model.expertsPerGroup,
            maxExtraReplicas: placement == .staticPlacement ? 0 : model.extraReplicas(groups: groupCount),
            grouping: placement == .planner ? .coactivation : .consecutive)
        var rows: [ExpertAddress: Double] = [:]
        for (layer, experts) in demand.enumerated() {
            for (expert, value) in experts.enumerated() {
                rows[ExpertAddress(layer: String(layer), expert: expert)] = value
            }
        }
        let plan = try PlacementPlanner.plan(
            layers: layers, bytesPerExpert: model.bytesPerExpert,
            telemetry: PlacementTelemetry(
                demand: rows,
                coactivation: Dictionary(uniqueKeysWithValues: coactivation.enumerated().map { (String($0), $1) })),
            constraints: constraints)
        let index = Dictionary(uniqueKeysWithValues: plan.groups.enumerated().map { ($1.name, $0) })
        let groups = plan.groups.map { group in
            (
                name: group.name, experts: group.experts.map { Int(group.layer)! * model.experts + $0 },
                bytes: group.bytes
            )
        }
        var replicaNodes = [[Int]](repeating: [], count: groups.count)
        if placement == .staticPlacement {
            // Dealt in turn, as a deployment that knows nothing of the traffic would; memory still checked.
            var free = [Int](repeating: model.nodeMemoryBytes, count: model.nodes)
            for (number, group) in groups.enumerated() {
                guard
                    let node = (0..<model.nodes).lazy.map({ (number + $0) % model.nodes }).first(where: {
                        free[$0] >= group.bytes
                    })
                else { throw PlacementPlanner.tooSmall(plan.groups, constraints) }
                free[node] -= group.bytes
                replicaNodes[number].append(node)
            }
        } else {
            for (node, names) in plan.nodes.enumerated() {
                for name in names { replicaNodes[index[name]!].append(node) }
            }
        }
        return FleetLayout(groups: groups, replicaNodes: replicaNodes, pairsInsideGroups: plan.pairsInsideGroups)
    }
}
