import Logging
import MoECore
import MoEModel
import MoEPolicy
import MoEServing

// The status: what `moemesh status` and the status page show.
extension Coordinator {
    public func status() -> CoordinatorStatus {
        let now = ContinuousClock.now
        let records = self.replicas.values.sorted { ($0.group, $0.id) < ($1.group, $1.id) }
        let minimum = self.settings.autoscale?.minRowsPerSecond ?? 1
        let groups = self.groups.values.sorted { $0.group.name < $1.group.name }.map { group in
            let members = records.filter { $0.group == group.group.name }
            let serving = members.filter(\.isServing).count
            let rate = self.rowsPerSecond(group.group, at: now)
            let state =
                if serving < group.desired { "starting" } else if members.contains(where: { !$0.isServing }) {
                    "draining"
                } else if group.desired == 0 && serving == 0 { "scaled to zero" } else if rate < minimum { "idle" } else
                { "active" }
            return CoordinatorStatus.GroupStatus(
                group: group.group.name, experts: group.group.experts, desiredReplicas: group.desired,
                servingReplicas: serving, demandRowsPerSecond: rate, state: state)
        }
        let servingByExpert = Dictionary(grouping: records.filter(\.isServing).flatMap(\.experts), by: { $0 })
            .mapValues(\.count)
        var status = CoordinatorStatus(
            modelType: self.modelType, scaler: self.scaler.name, autoscale: self.policy != nil,
            topologyVersion: self.version,
            replicas: records.map { record in
                CoordinatorStatus.ReplicaStatus(
                    replica: record.replica, load: record.load, sinceHeartbeat: now - record.lastHeartbeat,
                    ejectedBy: record.ejections.filter { $0.value.until > now }.sorted { $0.key < $1.key }
                        .map { "\($0.key): \($0.value.reason)" },
                    links: record.links.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" })
            },
            groups: groups,
            experts: self.layers.values.flatMap(\.expertAddresses).sorted().map { address in
                CoordinatorStatus.ExpertStatus(
                    expert: address, demandRowsPerSecond: self.demand.rowsPerSecond(address, at: now),
                    servingReplicas: servingByExpert[address] ?? 0, pruned: self.pruned.contains(address))
            },
            decisions: self.decisions,
            replicaBalancedness: AutoscalePolicy.balancedness(records.filter(\.isServing).map(\.load.rowsPerSecond)),
            routers: self.routersSeen.filter { now - $0.value < .seconds(10) }.keys.sorted())
        status.coactivation = self.coactivation.total(at: now)
        return status
    }
}
