import MoECore

/// `moemesh simulate`: a discrete-event simulation of a fleet serving MoE layers, run through the coordinator's own
/// policy code (`PlacementPlanner` for the initial layout, `AutoscalePolicy` for scaling).
///
/// The request path as the mesh has it: a client's request of T tokens goes through the layers in turn; per layer the
/// client works `client(T)`, its router batches it with other requests for the layer (`Batching`, as
/// `ForwardBatcher` does) and works `router(tokens of the batch)` (gate, dispatch, combine), then sends one call per
/// chosen expert with the batch's rows to the serving replica of the expert's group with the fewest calls outstanding (a hop: `hopLatency + bytes / bandwidth`
/// each way, `bytes = rows · H · wireBytes`); the call waits in its node's FIFO for one of `slotsPerNode` slots and
/// takes `call(rows)` there; the layer ends when its last call is back. A call to a group at zero replicas waits for
/// a cold start. Every `policyInterval` the coordinator's view (demand averaged over `demandWindow`) goes to
/// `AutoscalePolicy.decide` when the scenario scales; its decisions start replicas (serving after `coldStart`, on the
/// node with the most free memory that has no replica of the group, as a scheduler would) or drain them.
public struct FleetSimulator: Sendable {
    public struct SimulationError: Error, Sendable, Equatable, CustomStringConvertible {
        public let description: String
        public init(_ description: String) { self.description = description }
    }

    public let model: FleetModel
    /// Rows per expert and co-activation per layer: what the coordinator would have counted before planning.
    public let demand: [[Double]]
    public let coactivation: [Coactivation]

    public init(model: FleetModel) throws(SimulationError) {
        if let problem = model.problem { throw SimulationError(problem) }
        self.model = model
        var random = SplitMix64.Generator(seed: model.seed ^ 0x7E1E)
        var demand: [[Double]] = []
        var coactivation: [Coactivation] = []
        var chosen: [Int] = []
        for layer in 0..<model.layers {
            let sampler = TokenSampler(
                routing: model.routing, layer: layer, experts: model.experts, topK: model.topK, seed: model.seed)
            var rows = [Double](repeating: 0, count: model.experts)
            var counts = Coactivation(experts: model.experts)
            for _ in 0..<model.telemetryTokens {
                sampler.token(&random, into: &chosen)
                for (index, a) in chosen.enumerated() {
                    rows[a] += 1
                    for b in chosen[(index + 1)...] { counts.add(a, b, count: 1) }
                }
            }
            counts.addTokens(model.telemetryTokens)
            demand.append(rows)
            coactivation.append(counts)
        }
        self.demand = demand
        self.coactivation = coactivation
    }

    /// Runs `scenario` from the same seed as every other: the same tokens arrive in the same order.
    public func run(_ scenario: FleetScenario) throws(SimulationError) -> FleetResult {
        let started = ContinuousClock.now
        let layout: FleetLayout
        do {
            layout = try FleetLayout.make(
                scenario.placement, model: self.model, demand: self.demand, coactivation: self.coactivation)
        } catch {
            throw SimulationError("\(scenario): \(error.description)")
        }
        var run = FleetRun(model: self.model, layout: layout, scaleToZero: scenario.scaleToZero)
        run.simulate()
        return run.result(
            scenario: scenario, pairsInsideGroups: layout.pairsInsideGroups,
            runSeconds: (ContinuousClock.now - started).seconds)
    }
}

/// The state of one simulated run.
private struct FleetRun {
    enum Event {
        case requestStart(client: Int)
        /// The client's work of its request's layer is done (routers apart).
        case clientDone(client: Int)
        /// A batch leader's wait for more requests is over.
        case collect(client: Int)
        case dispatch(batch: Int)
        case callArrives(call: Int)
        case jobDone(job: Int)
        case callReturns(call: Int)
        case replicaReady(replica: Int)
        case policyTick
        /// A processor-shared node's next job may be done (stale when `version` is not the node's).
        case sharedNodeDone(node: Int, version: Int)
    }

    /// A node whose jobs share its slots (`NodeDiscipline.shared`), in virtual time: `V` grows at
    /// `min(1, slots / jobs)` per second, and a job of `w` seconds started at `V₀` is done when `V = V₀ + w`.
    struct SharedNode {
        var virtual = 0.0
        var updated = 0.0
        var jobs = EventQueue<Int>()
        var count = 0
        var version = 0
    }

    enum ReplicaState { case starting, serving, draining, stopped }

    struct Replica {
        let group: Int
        let node: Int
        var state: ReplicaState
        var outstanding = 0
        var rowsThisInterval = 0
    }

    struct Call {
        var batch: Int
        var group: Int
        var replica: Int
        var rows: Int
    }

    struct Request {
        var layer = 0
        var started = 0.0
    }

    /// Requests of one router and layer that share one call per expert.
    struct Batch {
        var router: Int
        var layer: Int
        var clients: [Int]
        var tokens: Int
        var pending = 0
    }

    /// A router's batcher for one layer.
    struct Batcher {
        var running = 0
        var queue = IntQueue()
        var lastSize = 0
    }

    let model: FleetModel
    let scaleToZero: Bool
    let samplers: [TokenSampler]
    let policy: AutoscalePolicy
    let end: Double
    var random: SplitMix64.Generator
    /// Service-time draws, apart from routing's so that jitter leaves the tokens as they were.
    var jitterRandom: SplitMix64.Generator
    var events = EventQueue<Event>()
    var now = 0.0

    // Groups, by index; experts by global id `layer · experts + expert`.
    let groupNames: [String]
    let groupBytes: [Int]
    var groupOf: [Int]
    var groupReplicas: [[Int]]
    var desired: [Int]
    var lastChange: [Double]
    var lastDemand: [Double]
    var waiting: [[Int]]
    /// Rows routed to each group per policy interval, the last `demandWindow` of them.
    var demandBuckets: [[Int]]
    var bucket = 0

    var replicas: [Replica] = []
    var nodeBusySlots: [Int]
    var nodeQueues: [IntQueue]
    var nodeFreeBytes: [Int]
    var nodeBusySeconds: [Double]
    var sharedNodes: [SharedNode]
    var calls: [Call] = []
    var freeCalls: [Int] = []
    var requests: [Request]
    var batches: [Batch] = []
    var freeBatches: [Int] = []
    /// By `router · layers + layer`.
    var batchers: [Batcher]

    // Measurements over [warmUp, end).
    var latencies: [Double] = []
    var tokensDone = 0
    var tokensRouted = 0
    var servicesChosen = 0
    var callsSent = 0
    var balancedness: [Double] = []
    /// Replicas not stopped, at each policy interval.
    var replicaSamples: [Int] = []
    var coldStarts = 0
    var decisions = 0
    let replicasAtStart: Int

    // Scratch for routing one layer.
    var rowsOfExpert: [Int]
    var touched: [Int] = []
    var chosen: [Int] = []
    var rotation = 0

    init(model: FleetModel, layout: FleetLayout, scaleToZero: Bool) {
        self.model = model
        self.scaleToZero = scaleToZero
        self.samplers = (0..<model.layers).map {
            TokenSampler(routing: model.routing, layer: $0, experts: model.experts, topK: model.topK, seed: model.seed)
        }
        let total = layout.replicaNodes.reduce(0) { $0 + $1.count }
        self.replicasAtStart = total
        // The same replica budget as EPLB's: one per group and the redundant share.
        let groups = layout.groups.count
        self.policy = AutoscalePolicy(
            settings: .init(
                maxTotalReplicas: max(total, groups + model.extraReplicas(groups: groups)),
                maxReplicasPerGroup: model.nodes,
                cooldown: .milliseconds(Int(model.cooldown * 1000)),
                idleTimeout: .milliseconds(Int(model.idleTimeout * 1000))))
        self.end = model.warmUp + model.measured
        self.random = SplitMix64.Generator(seed: model.seed)
        self.jitterRandom = SplitMix64.Generator(seed: model.seed ^ 0x4A17)
        self.groupNames = layout.groups.map(\.name)
        self.groupBytes = layout.groups.map(\.bytes)
        self.groupOf = [Int](repeating: 0, count: model.layers * model.experts)
        for (group, members) in layout.groups.enumerated() {
            for expert in members.experts { self.groupOf[expert] = group }
        }
        self.groupReplicas = [[Int]](repeating: [], count: groups)
        self.desired = layout.replicaNodes.map(\.count)
        self.lastChange = [Double](repeating: 0, count: groups)
        self.lastDemand = [Double](repeating: 0, count: groups)
        self.waiting = [[Int]](repeating: [], count: groups)
        let buckets = max(1, Int((model.demandWindow / model.policyInterval).rounded()))
        self.demandBuckets = [[Int]](repeating: [Int](repeating: 0, count: buckets), count: groups)
        self.nodeBusySlots = [Int](repeating: 0, count: model.nodes)
        self.nodeQueues = [IntQueue](repeating: IntQueue(), count: model.nodes)
        self.nodeFreeBytes = [Int](repeating: model.nodeMemoryBytes, count: model.nodes)
        self.nodeBusySeconds = [Double](repeating: 0, count: model.nodes)
        self.sharedNodes = [SharedNode](repeating: SharedNode(), count: model.discipline == .shared ? model.nodes : 0)
        self.requests = [Request](repeating: Request(), count: model.clients)
        self.batchers = [Batcher](repeating: Batcher(), count: model.routers * model.layers)
        self.rowsOfExpert = [Int](repeating: 0, count: model.experts)
        for (group, nodes) in layout.replicaNodes.enumerated() {
            for node in nodes {
                self.groupReplicas[group].append(self.replicas.count)
                self.replicas.append(Replica(group: group, node: node, state: .serving))
                self.nodeFreeBytes[node] -= self.groupBytes[group]
            }
        }
    }

    mutating func simulate() {
        for client in 0..<self.model.clients {
            // Clients start spread over the first millisecond, not all at once.
            self.events.push(.requestStart(client: client), at: 1e-3 * Double(client) / Double(self.model.clients))
        }
        self.events.push(.policyTick, at: self.model.policyInterval)
        while let (time, event) = self.events.pop(), time < self.end {
            self.now = time
            switch event {
            case .requestStart(let client): self.startRequest(client)
            case .clientDone(let client): self.arrive(client)
            case .collect(let client): self.collect(leader: client)
            case .dispatch(let batch): self.dispatch(batch)
            case .callArrives(let call): self.enqueue(job: call, on: self.replicas[self.calls[call].replica].node)
            case .jobDone(let job): self.finished(job: job)
            case .callReturns(let call): self.callReturned(call)
            case .replicaReady(let replica): self.replicaReady(replica)
            case .policyTick: self.policyTick()
            case .sharedNodeDone(let node, let version): self.sharedNodeDone(node, version: version)
            }
        }
    }

    var measuring: Bool { self.now >= self.model.warmUp }

    // MARK: requests and layers

    mutating func startRequest(_ client: Int) {
        self.requests[client] = Request(layer: 0, started: self.now)
        self.startLayer(client)
    }

    /// The client's work, then its router's batcher.
    mutating func startLayer(_ client: Int) {
        let work = self.model.client.seconds(rows: self.model.tokensPerRequest)
        guard work > 0 else { return self.arrive(client) }
        if let node = self.model.routerNode {
            self.enqueue(job: Self.clientJob(client), on: node)
        } else {
            self.events.push(.clientDone(client: client), at: self.now + work)
        }
    }

    /// Jobs on a node's slots: calls (their ids), a batch's router work, a client's work.
    static func routerJob(_ batch: Int) -> Int { -1 - 2 * batch }
    static func clientJob(_ client: Int) -> Int { -2 - 2 * client }

    func batcherIndex(_ client: Int) -> Int {
        (client % self.model.routers) * self.model.layers + self.requests[client].layer
    }

    /// A request reaches its router for its current layer: it leads a batch if one may start, else it queues.
    mutating func arrive(_ client: Int) {
        guard self.model.batching != nil else { return self.startBatch([client]) }
        let index = self.batcherIndex(client)
        if self.batchers[index].running < self.model.batching!.maxConcurrentBatches {
            self.batchers[index].running += 1
            self.lead(client)
        } else {
            self.batchers[index].queue.append(client)
        }
    }

    /// A leader waits for more requests only under concurrent load: the layer's previous batch held more than one, or
    /// requests are queued.
    mutating func lead(_ client: Int) {
        let delay = self.model.batching!.maxDelay
        let batcher = self.batchers[self.batcherIndex(client)]
        if (batcher.lastSize > 1 || !batcher.queue.isEmpty) && delay > 0 {
            self.events.push(.collect(client: client), at: self.now + delay)
        } else {
            self.collect(leader: client)
        }
    }

    /// The leader and the queued requests, up to the batch's tokens.
    mutating func collect(leader: Int) {
        let index = self.batcherIndex(leader)
        let tokens = self.model.tokensPerRequest
        var members = [leader]
        while members.count * tokens + tokens <= self.model.batching!.maxTokens,
            let next = self.batchers[index].queue.popFirst()
        {
            members.append(next)
        }
        self.batchers[index].lastSize = members.count
        self.startBatch(members)
    }

    mutating func startBatch(_ clients: [Int]) {
        let batch = Batch(
            router: clients[0] % self.model.routers, layer: self.requests[clients[0]].layer, clients: clients,
            tokens: clients.count * self.model.tokensPerRequest)
        let id: Int
        if let free = self.freeBatches.popLast() {
            self.batches[free] = batch
            id = free
        } else {
            id = self.batches.count
            self.batches.append(batch)
        }
        if let node = self.model.routerNode {
            self.enqueue(job: Self.routerJob(id), on: node)
        } else {
            self.events.push(.dispatch(batch: id), at: self.now + self.model.router.seconds(rows: batch.tokens))
        }
    }

    /// Routes the batch's tokens and sends one call per chosen expert.
    mutating func dispatch(_ batch: Int) {
        let layer = self.batches[batch].layer
        let sampler = self.samplers[layer]
        self.touched.removeAll(keepingCapacity: true)
        for _ in 0..<self.batches[batch].tokens {
            sampler.token(&self.random, into: &self.chosen)
            var services = 0
            for (index, expert) in self.chosen.enumerated() {
                if self.rowsOfExpert[expert] == 0 { self.touched.append(expert) }
                self.rowsOfExpert[expert] += 1
                let group = self.groupOf[layer * self.model.experts + expert]
                if !self.chosen[..<index].contains(where: { self.groupOf[layer * self.model.experts + $0] == group }) {
                    services += 1
                }
            }
            if self.measuring {
                self.tokensRouted += 1
                self.servicesChosen += services
            }
        }
        if self.measuring { self.callsSent += self.touched.count }
        self.batches[batch].pending = self.touched.count
        for expert in self.touched {
            let rows = self.rowsOfExpert[expert]
            self.rowsOfExpert[expert] = 0
            let group = self.groupOf[layer * self.model.experts + expert]
            let call = Call(batch: batch, group: group, replica: -1, rows: rows)
            let id: Int
            if let free = self.freeCalls.popLast() {
                self.calls[free] = call
                id = free
            } else {
                id = self.calls.count
                self.calls.append(call)
            }
            self.demandBuckets[group][self.bucket] += rows
            self.lastDemand[group] = self.now
            self.route(id)
        }
    }

    /// Sends `call` to the serving replica of its group with the fewest calls outstanding, or holds it for a cold start.
    mutating func route(_ call: Int) {
        let group = self.calls[call].group
        var best = -1
        let members = self.groupReplicas[group]
        for offset in members.indices {
            let replica = members[(offset + self.rotation) % members.count]
            guard self.replicas[replica].state == .serving else { continue }
            if best < 0 || self.replicas[replica].outstanding < self.replicas[best].outstanding { best = replica }
        }
        self.rotation &+= 1
        guard best >= 0 else {
            self.waiting[group].append(call)
            if !members.contains(where: { self.replicas[$0].state == .starting }) {
                if self.measuring { self.coldStarts += 1 }
                self.apply(
                    AutoscalePolicy.Decision(
                        group: self.groupNames[group], from: self.desired[group], to: max(1, self.desired[group]),
                        reason: "cold start"), group: group, force: true)
            }
            return
        }
        self.calls[call].replica = best
        self.replicas[best].outstanding += 1
        self.replicas[best].rowsThisInterval += self.calls[call].rows
        self.events.push(.callArrives(call: call), at: self.now + self.hop(rows: self.calls[call].rows))
    }

    func hop(rows: Int) -> Double {
        self.model.hopLatency
            + Double(rows * self.model.hiddenSize * self.model.wireBytes) / self.model.bandwidth
    }

    mutating func callReturned(_ call: Int) {
        let replica = self.calls[call].replica
        let batch = self.calls[call].batch
        self.freeCalls.append(call)
        self.replicas[replica].outstanding -= 1
        if self.replicas[replica].state == .draining && self.replicas[replica].outstanding == 0 { self.stop(replica) }
        self.batches[batch].pending -= 1
        if self.batches[batch].pending == 0 { self.finish(batch: batch) }
    }

    /// Frees the batch's place in its batcher (the first queued request leads next) and moves its requests on.
    mutating func finish(batch: Int) {
        let clients = self.batches[batch].clients
        self.freeBatches.append(batch)
        if self.model.batching != nil {
            let index = self.batcherIndex(clients[0])
            if let next = self.batchers[index].queue.popFirst() {
                self.lead(next)
            } else {
                self.batchers[index].running -= 1
            }
        }
        for client in clients {
            self.requests[client].layer += 1
            if self.requests[client].layer < self.model.layers {
                self.startLayer(client)
                continue
            }
            if self.measuring {
                self.tokensDone += self.model.tokensPerRequest
                if self.requests[client].started >= self.model.warmUp {
                    self.latencies.append(self.now - self.requests[client].started)
                }
            }
            self.startRequest(client)
        }
    }

    // MARK: nodes

    mutating func enqueue(job: Int, on node: Int) {
        if self.model.discipline == .shared {
            let work = self.work(of: job)
            if self.measuring { self.nodeBusySeconds[node] += work }
            self.advance(node)
            self.sharedNodes[node].jobs.push(job, at: self.sharedNodes[node].virtual + work)
            self.sharedNodes[node].count += 1
            self.reschedule(node)
        } else if self.nodeBusySlots[node] < self.model.slotsPerNode {
            self.begin(job: job, on: node)
        } else {
            self.nodeQueues[node].append(job)
        }
    }

    /// Seconds of one slot the job takes: its mean, times `1 − j + j · X` with X exponential of mean 1 for
    /// `serviceJitter` j.
    mutating func work(of job: Int) -> Double {
        let mean =
            job >= 0
            ? self.model.call.seconds(rows: self.calls[job].rows)
            : job % 2 != 0
                ? self.model.router.seconds(rows: self.batches[(-1 - job) / 2].tokens)
                : self.model.client.seconds(rows: self.model.tokensPerRequest)
        let jitter = self.model.serviceJitter
        guard jitter > 0 else { return mean }
        return mean * (1 - jitter + jitter * -Double.log(1 - self.jitterRandom.unit()))
    }

    mutating func begin(job: Int, on node: Int) {
        self.nodeBusySlots[node] += 1
        let seconds = self.work(of: job)
        if self.measuring { self.nodeBusySeconds[node] += seconds }
        self.events.push(.jobDone(job: job), at: self.now + seconds)
    }

    /// Brings a shared node's virtual time to now.
    mutating func advance(_ node: Int) {
        let count = self.sharedNodes[node].count
        if count > 0 {
            let rate = min(1, Double(self.model.slotsPerNode) / Double(count))
            self.sharedNodes[node].virtual += rate * (self.now - self.sharedNodes[node].updated)
        }
        self.sharedNodes[node].updated = self.now
    }

    /// Schedules the shared node's next completion; earlier schedules go stale.
    mutating func reschedule(_ node: Int) {
        self.sharedNodes[node].version += 1
        guard let next = self.sharedNodes[node].jobs.first else { return }
        let rate = min(1, Double(self.model.slotsPerNode) / Double(self.sharedNodes[node].count))
        let remaining = max(0, next.time - self.sharedNodes[node].virtual)
        self.events.push(
            .sharedNodeDone(node: node, version: self.sharedNodes[node].version), at: self.now + remaining / rate)
    }

    mutating func sharedNodeDone(_ node: Int, version: Int) {
        guard version == self.sharedNodes[node].version else { return }
        self.advance(node)
        guard let (tag, job) = self.sharedNodes[node].jobs.pop() else { return }
        self.sharedNodes[node].virtual = max(self.sharedNodes[node].virtual, tag)
        self.sharedNodes[node].count -= 1
        self.reschedule(node)
        self.done(job: job)
    }

    /// A FIFO node's job is done: its slot takes the next.
    mutating func finished(job: Int) {
        let node = job >= 0 ? self.replicas[self.calls[job].replica].node : self.model.routerNode!
        self.nodeBusySlots[node] -= 1
        if let next = self.nodeQueues[node].popFirst() { self.begin(job: next, on: node) }
        self.done(job: job)
    }

    mutating func done(job: Int) {
        if job >= 0 {
            self.events.push(.callReturns(call: job), at: self.now + self.hop(rows: self.calls[job].rows))
        } else if job % 2 != 0 {
            self.dispatch((-1 - job) / 2)
        } else {
            self.arrive((-2 - job) / 2)
        }
    }

    // MARK: the coordinator

    mutating func policyTick() {
        let interval = self.model.policyInterval
        let live = self.replicas.indices.filter { self.replicas[$0].state == .serving }
        if self.measuring {
            self.balancedness.append(
                AutoscalePolicy.balancedness(live.map { Double(self.replicas[$0].rowsThisInterval) }))
            self.replicaSamples.append(self.replicas.filter { $0.state != .stopped }.count)
        }
        for replica in live { self.replicas[replica].rowsThisInterval = 0 }
        if self.scaleToZero {
            let window = Double(self.demandBuckets.first?.count ?? 1) * interval
            let loads = self.groupNames.indices.map { group in
                AutoscalePolicy.GroupLoad(
                    group: String(group), replicas: self.desired[group],
                    rowsPerSecond: Double(self.demandBuckets[group].reduce(0, +)) / window,
                    idleFor: Self.duration(self.now - max(self.lastDemand[group], self.lastChange[group])),
                    sinceChange: Self.duration(self.now - self.lastChange[group]))
            }
            for decision in self.policy.decide(loads) {
                let group = Int(decision.group)!
                self.apply(decision, group: group, force: false)
            }
        }
        self.bucket = (self.bucket + 1) % (self.demandBuckets.first?.count ?? 1)
        for group in self.demandBuckets.indices { self.demandBuckets[group][self.bucket] = 0 }
        self.events.push(.policyTick, at: self.now + interval)
    }

    static func duration(_ seconds: Double) -> Duration { .microseconds(Int64((seconds * 1e6).rounded())) }

    /// Starts replicas up to the decision's count, or drains the least busy down to it.
    mutating func apply(_ decision: AutoscalePolicy.Decision, group: Int, force: Bool) {
        if self.measuring { self.decisions += 1 }
        self.desired[group] = decision.to
        self.lastChange[group] = self.now
        let active = self.groupReplicas[group].filter {
            self.replicas[$0].state == .serving || self.replicas[$0].state == .starting
        }
        if decision.to > active.count {
            for _ in active.count..<decision.to where !self.startReplica(of: group) {
                self.desired[group] -= 1
            }
        } else {
            let surplus = active.sorted { self.replicas[$0].outstanding < self.replicas[$1].outstanding }
                .prefix(active.count - decision.to)
            for replica in surplus {
                self.replicas[replica].state = .draining
                if self.replicas[replica].outstanding == 0 { self.stop(replica) }
            }
        }
    }

    /// A new replica of `group` on the node with the most free memory (a scheduler's least-allocated rule; the
    /// lowest index on ties) that holds none of the group; false if no node has room.
    mutating func startReplica(of group: Int) -> Bool {
        let hosting = Set(self.groupReplicas[group].map { self.replicas[$0].node })
        var best = -1
        for node in 0..<self.model.nodes
        where !hosting.contains(node) && self.nodeFreeBytes[node] >= self.groupBytes[group]
            && (best < 0 || self.nodeFreeBytes[node] > self.nodeFreeBytes[best])
        {
            best = node
        }
        guard best >= 0 else { return false }
        self.nodeFreeBytes[best] -= self.groupBytes[group]
        self.groupReplicas[group].append(self.replicas.count)
        self.events.push(.replicaReady(replica: self.replicas.count), at: self.now + self.model.coldStart)
        self.replicas.append(Replica(group: group, node: best, state: .starting))
        return true
    }

    mutating func replicaReady(_ replica: Int) {
        guard self.replicas[replica].state == .starting else { return }
        let group = self.replicas[replica].group
        let serving = self.groupReplicas[group].filter { self.replicas[$0].state == .serving }.count
        guard serving < self.desired[group] else { return self.stop(replica) }
        self.replicas[replica].state = .serving
        let held = self.waiting[group]
        self.waiting[group] = []
        for call in held { self.route(call) }
    }

    mutating func stop(_ replica: Int) {
        self.replicas[replica].state = .stopped
        let group = self.replicas[replica].group
        self.nodeFreeBytes[self.replicas[replica].node] += self.groupBytes[group]
        self.groupReplicas[group].removeAll { $0 == replica }
    }

    // MARK: results

    func result(scenario: FleetScenario, pairsInsideGroups: Double, runSeconds: Double) -> FleetResult {
        let sorted = self.latencies.sorted()
        func percentile(_ p: Double) -> Double {
            sorted.isEmpty ? 0 : 1000 * sorted[min(sorted.count - 1, Int((p * Double(sorted.count)).rounded(.down)))]
        }
        let measured = self.model.measured
        return FleetResult(
            scenario: scenario.description, placement: scenario.placement, scaleToZero: scenario.scaleToZero,
            tokensPerSecond: Double(self.tokensDone) / measured, p50Ms: percentile(0.5), p99Ms: percentile(0.99),
            replicaBalancedness: self.balancedness.isEmpty
                ? 1 : self.balancedness.reduce(0, +) / Double(self.balancedness.count),
            nodeBalancedness: AutoscalePolicy.balancedness(self.nodeBusySeconds),
            servicesPerToken: self.tokensRouted == 0 ? 0 : Double(self.servicesChosen) / Double(self.tokensRouted),
            callsPerToken: self.tokensRouted == 0 ? 0 : Double(self.callsSent) / Double(self.tokensRouted),
            replicasAtStart: self.replicasAtStart,
            meanReplicas: self.replicaSamples.isEmpty
                ? Double(self.replicasAtStart)
                : Double(self.replicaSamples.reduce(0, +)) / Double(self.replicaSamples.count),
            coldStarts: self.coldStarts, scalingDecisions: self.decisions, pairsInsideGroups: pairsInsideGroups,
            requests: self.latencies.count, runSeconds: runSeconds)
    }
}
