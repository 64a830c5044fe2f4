import Logging
import MoECore
import MoEModel
import MoEPolicy
import MoEServing

// Demand reported by routers, cold starts, and admin actions (prune, restore, drain).
extension Coordinator {
    /// Records a router's report.
    /// - Throws: `CoordinatorError.invalidRequest` when its co-activation names a layer this model lacks or counts a
    ///   layer of another width (nothing of the report is recorded then).
    public func reportDemand(_ report: DemandReport) throws(CoordinatorError) {
        for (layer, counts) in report.coactivation.sorted(by: { $0.key < $1.key }) {
            guard let spec = self.layers[layer] else {
                throw .invalidRequest(
                    "coactivation: layer '\(layer)' is not an MoE layer of this model; MoE layers: "
                        + self.layers.keys.sorted { ($0.count, $0) < ($1.count, $1) }.joined(separator: ", "))
            }
            guard spec.numExperts == counts.experts else {
                throw .invalidRequest(
                    "coactivation of layer '\(layer)': num_experts: expected \(spec.numExperts), got \(counts.experts)")
            }
        }
        let now = ContinuousClock.now
        for (layer, counts) in report.coactivation { self.coactivation.record(layer: layer, counts, at: now) }
        self.routersSeen[report.routerID] = now
        for (address, rows) in report.rows where self.isExpert(address) {
            self.demand.record(address, rows: rows, at: now)
        }
        // A router that ejected a replica (unreachable from it, or far slower than its peers) says so before the
        // replica's lease runs out: the status shows it; the lease alone decides whether it stays in the topology,
        // since another router may still reach it.
        for ejection in report.ejections {
            guard let id = self.replicas.first(where: { $0.value.endpoint == ejection.endpoint })?.key else { continue }
            self.replicas[id]!.ejections[report.routerID] = (now + ejection.duration, ejection.reason)
            self.logger.warning(
                "a router ejected a replica",
                metadata: [
                    "router": "\(report.routerID)", "replica": "\(id)", "endpoint": "\(ejection.endpoint)",
                    "reason": "\(ejection.reason)", "for": "\(ejection.duration)",
                ])
        }
        for id in self.replicas.keys {
            self.replicas[id]!.links[report.routerID] = report.links[self.replicas[id]!.endpoint]
        }
    }

    /// Starts a replica of every expert in `addresses` that has none serving; returns once asked (see `covers`).
    public func ensure(_ addresses: [ExpertAddress], reason: String) async throws(CoordinatorError) {
        if let unknown = addresses.first(where: { !self.isExpert($0) }) { throw .unknownExpert(unknown) }
        let missing = addresses.filter { !self.covers([$0]) }
        var toStart: [String: [ExpertAddress]] = [:]
        for address in missing {
            let candidates = self.groups.values.filter { $0.startable && $0.group.experts.contains(address) }
            // A group already asked for replicas is starting; otherwise the smallest group that hosts it.
            if candidates.contains(where: { $0.desired > 0 }) { continue }
            guard
                let group = candidates.min(by: {
                    ($0.group.experts.count, $0.group.name) < ($1.group.experts.count, $1.group.name)
                })
            else {
                throw .cannotStart(
                    [address],
                    reason: self.scaler.canStart
                        ? "no scaling group hosts it" : "no replica hosts it and the coordinator runs without a scaler")
            }
            toStart[group.group.name, default: []].append(address)
        }
        for (name, wanted) in toStart.sorted(by: { $0.key < $1.key }) {
            let decision = AutoscalePolicy.Decision(
                group: name, from: 0, to: 1,
                reason:
                    "cold start: \(wanted.map(\.description).joined(separator: ", ")) requested\(reason.isEmpty ? "" : " (\(reason))")"
            )
            await self.apply(decision)
        }
    }

    /// Returns once every expert in `addresses` has a serving replica (at once if they have), or when the task is
    /// cancelled.
    public func waitUntilCovered(_ addresses: [ExpertAddress]) async {
        guard !self.covers(addresses) else { return }
        let id = self.nextWatcher
        self.nextWatcher += 1
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                if Task.isCancelled { return continuation.resume() }
                self.coverageWaiters[id] = (addresses, continuation)
            }
        } onCancel: {
            Task { await self.stopWaiting(id) }  // cancellation handlers are synchronous: a hop onto the actor
        }
    }

    func stopWaiting(_ id: Int) {
        self.coverageWaiters.removeValue(forKey: id)?.continuation.resume()
    }

    /// Whether every expert in `addresses` has a serving replica.
    public func covers(_ addresses: [ExpertAddress]) -> Bool {
        let served = Set(self.replicas.values.filter(\.isServing).flatMap(\.experts))
        return addresses.allSatisfy(served.contains)
    }

    public func setPruned(_ address: ExpertAddress, pruned: Bool) throws(CoordinatorError) -> [ExpertAddress] {
        guard self.isExpert(address) else { throw .unknownExpert(address) }
        guard !address.isShared else {
            throw .invalidRequest(
                "\(address): a shared expert sees every token and is not routed; only routed experts can be pruned")
        }
        if pruned {
            let layer = self.layers[address.layer]!
            let remaining =
                layer.numExperts - self.pruned.filter { $0.layer == address.layer }.count
                - (self.pruned.contains(address) ? 0 : 1)
            guard remaining >= layer.topK else {
                throw .tooFewExperts(layer: address.layer, remaining: remaining, topK: layer.topK)
            }
            self.pruned.insert(address)
        } else {
            self.pruned.remove(address)
        }
        self.logger.notice(
            pruned ? "expert pruned from routing" : "expert restored to routing", metadata: ["expert": "\(address)"])
        self.record(
            AutoscalePolicy.Decision(
                group: address.description, from: 0, to: 0,
                reason: pruned ? "admin: pruned from routing" : "admin: restored to routing"))
        self.changed()
        return self.pruned.sorted()
    }

    /// Drains `id` (routers stop sending it work) and stops it once it has finished what it has.
    public func drain(replica id: String, reason: String) throws(CoordinatorError) -> Replica {
        guard var record = self.replicas[id] else { throw .unknownReplica(id) }
        if record.isServing, var group = self.groups[record.group], group.startable {
            group.desired = max(0, group.desired - 1)
            group.lastChange = .now
            self.groups[record.group] = group
            self.record(
                AutoscalePolicy.Decision(
                    group: record.group, from: group.desired + 1, to: group.desired,
                    reason: "\(reason): drain \(record.endpoint)"))
        }
        if record.isServing {
            record.drainingSince = .now
            self.replicas[id] = record
            self.logger.notice(
                "draining replica",
                metadata: ["replica": "\(id)", "endpoint": "\(record.endpoint)", "reason": "\(reason)"])
            self.changed()
        }
        return record.replica
    }
}
