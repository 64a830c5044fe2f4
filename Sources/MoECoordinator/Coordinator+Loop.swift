import Logging
import MoECore
import MoEModel
import MoEPolicy
import MoEServing

// The loop (`tick`): leases, the warm-up, drains, and the autoscaling policy with the decisions it takes.
extension Coordinator {
    /// Expires leases, ends the warm-up, stops drained replicas and runs the autoscaling policy when due, as of
    /// `now` (later instants let tests skip ahead).
    public func tick(at now: ContinuousClock.Instant = .now) async {
        for (id, record) in self.replicas where now - record.lastHeartbeat > self.settings.lease {
            self.replicas[id] = nil
            self.logger.warning(
                "replica lease expired; removed", metadata: ["replica": "\(id)", "endpoint": "\(record.endpoint)"])
            self.followRegistry(group: record.group)
            self.changed()
        }
        if !self.topologyReady && (now - self.startedAt >= self.settings.warmUp || self.everyGroupUp()) {
            self.topologyReady = true
            self.changed()
        }
        for (id, record) in self.replicas {
            guard let since = record.drainingSince, !record.retired else { continue }
            let finished = record.heartbeatsSinceDrain >= 2 && record.load.inFlightRows == 0
            guard finished || now - since >= self.settings.drainTimeout else { continue }
            self.replicas[id]?.retired = true
            let leaving = self.groups[record.group]?.desired ?? 0
            guard let group = self.groups[record.group]?.group else { continue }
            do {
                try await self.scaler.retire(
                    RetiringReplica(endpoint: record.endpoint, instance: record.instance), leaving: leaving, of: group)
                self.logger.info(
                    "drained replica stopped", metadata: ["replica": "\(id)", "endpoint": "\(record.endpoint)"])
            } catch {
                self.logger.error(
                    "could not stop a drained replica", metadata: ["replica": "\(id)", "error": "\(error)"])
            }
        }
        self.forgetGoneGroups()
        self.recordGauges(at: now)
        if let policy = self.policy, self.topologyReady, !self.autoscalePaused,
            now - self.lastPolicyRun >= self.settings.policyInterval
        {
            self.lastPolicyRun = now
            for decision in policy.decide(self.groupLoads(at: now)) { await self.apply(decision) }
        }
    }

    /// Replicas (serving, draining), desired replicas and demand of each group.
    func recordGauges(at now: ContinuousClock.Instant) {
        for group in self.groups.values {
            let name = group.group.name
            let members = self.replicas.values.filter { $0.group == name }
            self.metrics.gauge("moemesh_coordinator_replicas", [("group", name), ("state", "serving")])
                .record(members.filter(\.isServing).count)
            self.metrics.gauge("moemesh_coordinator_replicas", [("group", name), ("state", "draining")])
                .record(members.filter { !$0.isServing }.count)
            self.metrics.gauge("moemesh_coordinator_desired_replicas", [("group", name)]).record(group.desired)
            self.metrics.gauge("moemesh_coordinator_demand_rows_per_second", [("group", name)])
                .record(self.rowsPerSecond(group.group, at: now))
        }
    }

    /// Holds the autoscaling policy (the registry, cold starts and admin actions go on).
    public func pauseAutoscaling(_ paused: Bool) {
        self.autoscalePaused = paused
    }

    func everyGroupUp() -> Bool {
        let startable = self.groups.values.filter(\.startable)
        return !startable.isEmpty
            && startable.allSatisfy { group in
                self.servingReplicas(of: group.group.name) >= group.desired
            }
    }

    func groupLoads(at now: ContinuousClock.Instant) -> [AutoscalePolicy.GroupLoad] {
        self.groups.values.filter(\.startable).sorted { $0.group.name < $1.group.name }.map { group in
            let lastDemand = group.group.experts.compactMap { self.demand.lastDemand[$0] }.max() ?? group.lastChange
            return AutoscalePolicy.GroupLoad(
                group: group.group.name, replicas: group.desired,
                rowsPerSecond: self.rowsPerSecond(group.group, at: now),
                idleFor: now - max(lastDemand, group.lastChange), sinceChange: now - group.lastChange)
        }
    }

    func rowsPerSecond(_ group: ScalingGroup, at now: ContinuousClock.Instant) -> Double {
        group.experts.reduce(0) { $0 + self.demand.rowsPerSecond($1, at: now) }
    }

    /// Carries out one decision: more replicas through the scaler; fewer by draining the least busy first.
    func apply(_ decision: AutoscalePolicy.Decision) async {
        guard var group = self.groups[decision.group] else { return }
        self.logger.notice(
            "scaling",
            metadata: [
                "group": "\(decision.group)", "from": "\(decision.from)", "to": "\(decision.to)",
                "reason": "\(decision.reason)",
            ])
        self.record(decision)
        group.desired = decision.to
        group.lastChange = .now
        self.groups[decision.group] = group
        if decision.to > decision.from {
            do {
                try await self.scaler.setReplicas(decision.to, of: group.group)
            } catch {
                self.logger.error(
                    "scaler could not start replicas", metadata: ["group": "\(decision.group)", "error": "\(error)"])
            }
        } else {
            let serving = self.replicas.values.filter { $0.group == decision.group && $0.isServing }
                .sorted {
                    ($0.load.inFlightRows, $0.load.rowsPerSecond, $0.id) < (
                        $1.load.inFlightRows, $1.load.rowsPerSecond, $1.id
                    )
                }
            for record in serving.prefix(max(0, serving.count - decision.to)) {
                self.replicas[record.id]?.drainingSince = .now
            }
            self.changed()
        }
    }

    func record(_ decision: AutoscalePolicy.Decision) {
        self.decisions.append(
            ScalingDecisionRecord(
                atUnixMs: WallClock.unixMilliseconds(), group: decision.group, from: decision.from, to: decision.to,
                reason: decision.reason))
        let direction = decision.to > decision.from ? "up" : decision.to < decision.from ? "down" : "admin"
        self.metrics.counter("moemesh_coordinator_scaling_decisions_total", [("direction", direction)]).increment()
        if self.decisions.count > Self.decisionLog {
            self.decisions.removeFirst(self.decisions.count - Self.decisionLog)
        }
    }
}
