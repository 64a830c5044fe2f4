import MoECore
import MoEModel

/// What the placement planner reads of a running mesh: each expert's demand (rows/s) and each layer's co-activation
/// over the coordinator's demand window, and the group serving each expert now (for services per token today).
public struct PlacementTelemetry: Sendable, Equatable {
    /// Rows per second per expert.
    public var demand: [ExpertAddress: Double]
    /// Layer → tokens that chose both experts of each pair.
    public var coactivation: [String: Coactivation]
    /// Expert → the group with a serving replica of it; experts no group serves are absent.
    public var servingGroups: [ExpertAddress: String]

    public init(
        demand: [ExpertAddress: Double] = [:], coactivation: [String: Coactivation] = [:],
        servingGroups: [ExpertAddress: String] = [:]
    ) {
        self.demand = demand
        self.coactivation = coactivation
        self.servingGroups = servingGroups
    }
}

extension PlacementPlanner {
    /// Expert services a token reaches per layer under the groups serving now; nil with no co-activation counted.
    public static func servicesPerTokenNow(layers: [MoELayerSpec], telemetry: PlacementTelemetry) -> Double? {
        Self.servicesPerToken(layers: layers, coactivation: telemetry.coactivation) {
            telemetry.servingGroups[$0]
        }
    }
}
