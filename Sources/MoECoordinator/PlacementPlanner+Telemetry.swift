import MoECore
import MoEPolicy
import MoEStatusViews

extension PlacementPlanner {
    /// The demand (rows/s per expert) and co-activation (per layer) of a coordinator's status.
    /// - Throws: `PlanError` for a status whose experts or counts do not parse.
    public static func telemetry(from report: StatusReport) throws(PlanError) -> (
        demand: [ExpertAddress: Double], coactivation: [String: Coactivation]
    ) {
        var demand: [ExpertAddress: Double] = [:]
        for expert in report.experts {
            guard let index = expert.expert == "shared" ? ExpertAddress.shared : Int(expert.expert) else {
                throw PlanError(
                    "status: expert '\(expert.expert)' of layer \(expert.layer) is not an index or 'shared'")
            }
            demand[ExpertAddress(layer: expert.layer, expert: index)] = expert.demandRowsPerSecond
        }
        var coactivation: [String: Coactivation] = [:]
        for layer in report.coactivation {
            guard layer.numExperts >= 1 else {
                throw PlanError("status: coactivation of layer \(layer.layer) has no experts")
            }
            var counts = Coactivation(experts: layer.numExperts)
            for pair in layer.pairs {
                guard pair.count == 3 else {
                    throw PlanError(
                        "status: coactivation pairs of layer \(layer.layer): expected [a, b, tokens], got \(pair)")
                }
                counts.add(Int(pair[0]), Int(pair[1]), count: Int(pair[2]))
            }
            counts.addTokens(Int(layer.tokens))
            coactivation[layer.layer] = counts
        }
        return (demand, coactivation)
    }
}
