import MoECore
import MoEModel
import MoEPolicy

// Applying a placement plan (`moemesh plan --apply`): new groups first, then the old ones drain.
extension Coordinator {
    /// What `applyPlan` did.
    public struct PlanApplied: Sendable, Equatable {
        /// Groups started, and groups kept (already running with the same experts) with their new replica counts.
        public var started: [String]
        public var kept: [String]
        /// Endpoints of the replicas of replaced groups, now draining.
        public var draining: [String]
    }

    /// Replaces the scaling groups with `planned` without losing a request: starts the groups the coordinator does not
    /// run yet, waits until each serves its replicas, then drains every replica of a group the plan leaves out
    /// (routers stop sending it work; `tick` stops it once it has finished what it has, and forgets the group).
    /// - Throws: `CoordinatorError.invalidRequest` for a plan that does not fit the model (unknown experts, an expert
    ///   no group hosts, a name reused for other experts, no replicas), `.cannotStart` without a scaler that starts
    ///   replicas or when the new groups are not serving within `timeout` (the old groups then keep serving).
    public func applyPlan(_ planned: [(group: ScalingGroup, replicas: Int)], timeout: Duration)
        async throws(CoordinatorError) -> PlanApplied
    {
        guard self.scaler.canStart else {
            throw .cannotStart(
                planned.flatMap(\.group.experts), reason: "the coordinator runs without a scaler that starts replicas")
        }
        try self.check(planned)
        var applied = PlanApplied(started: [], kept: [], draining: [])
        let now = ContinuousClock.now
        for (group, replicas) in planned {
            if let existing = self.groups[group.name], !self.retiringGroups.contains(group.name) {
                applied.kept.append(group.name)
                if existing.desired != replicas {
                    await self.apply(
                        AutoscalePolicy.Decision(
                            group: group.name, from: existing.desired, to: replicas, reason: "plan"))
                }
                continue
            }
            self.retiringGroups.remove(group.name)
            self.groups[group.name] = GroupRecord(group: group, desired: replicas, lastChange: now, startable: true)
            self.record(AutoscalePolicy.Decision(group: group.name, from: 0, to: replicas, reason: "plan: new group"))
            applied.started.append(group.name)
            do { try await self.scaler.setReplicas(replicas, of: group) } catch {
                throw .cannotStart(group.experts, reason: "the scaler could not start \(group.name): \(error)")
            }
        }
        let deadline = ContinuousClock.now + timeout
        while !planned.allSatisfy({ self.servingReplicas(of: $0.group.name) >= $0.replicas }) {
            guard ContinuousClock.now < deadline, !Task.isCancelled else {
                let late = planned.filter { self.servingReplicas(of: $0.group.name) < $0.replicas }.map(\.group.name)
                throw .cannotStart(
                    late.flatMap { self.groups[$0]?.group.experts ?? [] },
                    reason: "groups \(late.joined(separator: ", ")) not serving after \(timeout); the old groups "
                        + "keep serving beside them")
            }
            // Woken by the next change of the registry (a replica registering or turning ready), or the deadline.
            await self.changes.nextChange(after: self.changes.version, until: deadline)
        }
        let keep = Set(planned.map(\.group.name))
        for name in self.groups.keys.sorted() where !keep.contains(name) {
            let from = self.groups[name]!.desired
            self.groups[name]!.desired = 0
            self.groups[name]!.startable = false
            self.groups[name]!.lastChange = .now
            self.retiringGroups.insert(name)
            self.record(AutoscalePolicy.Decision(group: name, from: from, to: 0, reason: "plan: replaced, draining"))
            for (id, record) in self.replicas where record.group == name && record.isServing {
                self.replicas[id]!.drainingSince = .now
                applied.draining.append(record.endpoint)
            }
        }
        self.changed()
        self.logger.notice(
            "plan applied",
            metadata: [
                "started": "\(applied.started.count)", "kept": "\(applied.kept.count)",
                "draining": "\(applied.draining.count)",
            ])
        return applied
    }

    /// The model's MoE layers, in order.
    public var layerSpecs: [MoELayerSpec] {
        self.layers.values.sorted { ($0.name.count, $0.name) < ($1.name.count, $1.name) }
    }

    /// Forgets the groups that nothing will start again once their replicas are all gone: groups a plan replaced,
    /// and groups only registrations made (a coordinator without a scaler, a replica started by hand), so that their
    /// rows leave the status and `/metrics`, and the registry does not grow with every name ever registered.
    func forgetGoneGroups() {
        let occupied = Set(self.replicas.values.map(\.group))
        for (name, record) in self.groups where !record.startable && !occupied.contains(name) {
            self.groups[name] = nil
            self.retiringGroups.remove(name)
            self.metrics.removeGauges(where: "group", is: name)
        }
    }

    private func check(_ planned: [(group: ScalingGroup, replicas: Int)]) throws(CoordinatorError) {
        guard !planned.isEmpty else { throw .invalidRequest("groups: expected at least one, got none") }
        var names: Set<String> = []
        for (group, replicas) in planned {
            guard !group.name.isEmpty, names.insert(group.name).inserted else {
                throw .invalidRequest(
                    "group names: expected unique, non-empty names, got '\(group.name)' twice or empty")
            }
            guard replicas >= 1 else {
                throw .invalidRequest("group \(group.name): replicas: expected at least 1, got \(replicas)")
            }
            guard !group.experts.isEmpty else {
                throw .invalidRequest("group \(group.name): selection '\(group.selection)' names no expert")
            }
            if let unknown = group.experts.first(where: { !self.isExpert($0) }) { throw .unknownExpert(unknown) }
            if let existing = self.groups[group.name], !self.retiringGroups.contains(group.name),
                Set(existing.group.experts) != Set(group.experts)
            {
                throw .invalidRequest(
                    "group \(group.name): already runs '\(existing.group.selection)', the plan gives it "
                        + "'\(group.selection)'; give the new group another name")
            }
        }
        let hosted = Set(planned.flatMap(\.group.experts))
        let missing = self.layers.values.flatMap(\.expertAddresses).filter { !hosted.contains($0) }.sorted()
        guard missing.isEmpty else {
            throw .invalidRequest(
                "the plan hosts no replica of \(missing.prefix(8).map(\.description).joined(separator: ", "))"
                    + (missing.count > 8 ? " and \(missing.count - 8) more" : "") + "; every expert needs a group")
        }
    }
}
