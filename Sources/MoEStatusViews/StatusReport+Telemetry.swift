import MoECore
import MoEPolicy

extension StatusReport {
    /// What the planner reads of a saved `moemesh status --json`: as `PlacementTelemetry(CoordinatorStatus)` reads
    /// the status it was written from.
    /// - Throws: `PlanError` for experts or counts that do not parse.
    public func placementTelemetry() throws(PlacementPlanner.PlanError) -> PlacementTelemetry {
        var demand: [ExpertAddress: Double] = [:]
        for expert in self.experts {
            guard let index = expert.expert == "shared" ? ExpertAddress.shared : Int(expert.expert) else {
                throw PlacementPlanner.PlanError(
                    "status: expert '\(expert.expert)' of layer \(expert.layer) is not an index or 'shared'")
            }
            demand[ExpertAddress(layer: expert.layer, expert: index)] = expert.demandRowsPerSecond
        }
        var coactivation: [String: MoECore.Coactivation] = [:]
        for layer in self.coactivation {
            guard layer.numExperts >= 1 else {
                throw PlacementPlanner.PlanError("status: coactivation of layer \(layer.layer) has no experts")
            }
            var counts = MoECore.Coactivation(experts: layer.numExperts)
            for pair in layer.pairs {
                guard pair.count == 3 else {
                    throw PlacementPlanner.PlanError(
                        "status: coactivation pairs of layer \(layer.layer): expected [a, b, tokens], got \(pair)")
                }
                counts.add(Int(pair[0]), Int(pair[1]), count: Int(pair[2]))
            }
            counts.addTokens(Int(layer.tokens))
            coactivation[layer.layer] = counts
        }
        var servingGroups: [ExpertAddress: String] = [:]
        for group in self.groups where group.servingReplicas > 0 {
            for name in group.experts {
                guard let address = Self.address(name) else {
                    throw PlacementPlanner.PlanError(
                        "status: group \(group.group): expert '\(name)' is not LAYER:INDEX or LAYER:shared")
                }
                servingGroups[address] = group.group
            }
        }
        return PlacementTelemetry(demand: demand, coactivation: coactivation, servingGroups: servingGroups)
    }

    /// The expert `name(_:)` wrote: `LAYER:EXPERT` or `LAYER:shared` (the layer may hold colons; the last one splits).
    static func address(_ name: String) -> ExpertAddress? {
        guard let colon = name.lastIndex(of: ":") else { return nil }
        let layer = String(name[..<colon]), expert = name[name.index(after: colon)...]
        guard let index = expert == "shared" ? ExpertAddress.shared : Int(expert) else { return nil }
        return ExpertAddress(layer: layer, expert: index)
    }
}
