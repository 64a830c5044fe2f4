import Logging
import MoECore
import MoEModel
import MoEServing

// The topology routers watch: every change is a new version, sent to each watcher.
extension Coordinator {
    /// The topology now, then each change (the newest only, if the watcher is slow). Nothing is sent until the
    /// coordinator has warmed up.
    public func watch(router: String) -> AsyncStream<Topology> {
        let (stream, continuation) = AsyncStream.makeStream(of: Topology.self, bufferingPolicy: .bufferingNewest(1))
        guard !self.closed else {
            continuation.finish()
            return stream
        }
        let id = self.nextWatcher
        self.nextWatcher += 1
        self.watchers[id] = (router, continuation)
        self.routersSeen[router] = .now
        // Termination handlers are synchronous: a task hops onto the actor.
        continuation.onTermination = { _ in Task { await self.stopWatching(id) } }
        if self.topologyReady { continuation.yield(self.topology()) }
        self.logger.info("router watching the topology", metadata: ["router": "\(router)"])
        return stream
    }

    /// Ends every topology stream (the coordinator is stopping; routers resubscribe to its successor).
    public func closeWatchers() {
        self.closed = true
        for watcher in self.watchers.values { watcher.continuation.finish() }
        self.watchers = [:]
    }

    func stopWatching(_ id: Int) {
        if let watcher = self.watchers.removeValue(forKey: id) {
            self.logger.info("router stopped watching", metadata: ["router": "\(watcher.router)"])
        }
    }

    public func topology() -> Topology {
        let served = Set(self.replicas.values.filter(\.isServing).flatMap(\.experts))
        return Topology(
            version: self.version, replicas: self.replicas.values.sorted { $0.id < $1.id }.map(\.replica),
            startable: Set(self.groups.values.filter(\.startable).flatMap(\.group.experts)).subtracting(served)
                .sorted(),
            pruned: self.pruned.sorted())
    }

    /// A change: a new version, sent to every watcher; waiters whose experts are now served are woken.
    func changed() {
        self.version += 1
        self.changes.changed()
        for (id, waiter) in self.coverageWaiters where self.covers(waiter.experts) {
            self.coverageWaiters[id] = nil
            waiter.continuation.resume()
        }
        guard self.topologyReady else { return }
        let topology = self.topology()
        for watcher in self.watchers.values { watcher.continuation.yield(topology) }
    }
}
