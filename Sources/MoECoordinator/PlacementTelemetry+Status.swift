import MoECore
import MoEPolicy

extension PlacementTelemetry {
    /// What the planner reads of a coordinator's status: its experts' demand, its layers' co-activation, and the
    /// group of each serving group's experts.
    public init(_ status: CoordinatorStatus) {
        var servingGroups: [ExpertAddress: String] = [:]
        for group in status.groups where group.servingReplicas > 0 {
            for expert in group.experts { servingGroups[expert] = group.group }
        }
        self.init(
            demand: Dictionary(
                status.experts.map { ($0.expert, $0.demandRowsPerSecond) }, uniquingKeysWith: { _, last in last }),
            coactivation: status.coactivation, servingGroups: servingGroups)
    }
}
