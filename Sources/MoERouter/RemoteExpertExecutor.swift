import GRPCCore
import MoECore
import MoEProto
import MoERuntime
import MoEServing
import MoEWire
import Tracing

/// Runs an expert through its services: the expert's rows, gathered straight into one `Compute` message, sent to the
/// replica the `ReplicaScheduler` chooses, hedged to a second one when slow, sent again to another when the first
/// cannot be reached or leaves; every call within what is left of the client's deadline.
public struct RemoteExpertExecutor: ExpertExecutor {
    public let topology: ExpertTopology
    public let scheduler: ReplicaScheduler
    public let wireDType: DType
    /// Longest any one expert call may take (`--expert-timeout-ms`); the client's deadline may cut it shorter.
    public let expertTimeout: Duration
    /// Counts the rows sent to each expert (reported to the coordinator).
    public let demand: DemandMeter?
    /// Starts an expert that has no replica (scaled to zero) and returns once one serves.
    public let coldStart: (@Sendable (ExpertAddress) async throws -> Void)?
    /// Call latency, retries and hedges per expert.
    public let metrics: ServiceMetrics?
    /// A client span per expert call, its context sent in the call's metadata.
    public let tracer: any Tracer

    /// Time kept back from the client's deadline for combining the experts' answers and replying.
    public static let combineMargin: Duration = .milliseconds(2)

    public init(
        topology: ExpertTopology, scheduler: ReplicaScheduler = ReplicaScheduler(), wireDType: DType,
        expertTimeout: Duration = .seconds(30), demand: DemandMeter? = nil,
        coldStart: (@Sendable (ExpertAddress) async throws -> Void)? = nil, metrics: ServiceMetrics? = nil,
        tracer: any Tracer = InstrumentationSystem.tracer
    ) {
        self.topology = topology
        self.scheduler = scheduler
        self.wireDType = wireDType
        self.expertTimeout = expertTimeout
        self.demand = demand
        self.coldStart = coldStart
        self.metrics = metrics
        self.tracer = tracer
    }

    /// The rows' expert output, `[N, H]`. Replicas are tried as the scheduler orders them: one that cannot be
    /// reached (`UNAVAILABLE`, its deadline, connection lost) or leaves is left for the next; a slow one gets a hedge
    /// beside it. When all failed, under a coordinator, the call waits (within its deadline) for the replacement.
    /// An expert with no replica that the coordinator can start is cold-started first.
    public func compute(_ rows: ExpertRows) async throws -> Matrix {
        try await self.compute(rows, countingDemand: true)
    }

    private func compute(_ rows: ExpertRows, countingDemand: Bool) async throws -> Matrix {
        let address = rows.address
        let deadline = RequestDeadline.current.map { $0 - Self.combineMargin }
        if countingDemand { self.demand?.record(address, rows: rows.count) }
        if self.topology.replicas(for: address).isEmpty, let coldStart = self.coldStart,
            self.topology.isStartable(address)
        {
            do {
                try await coldStart(address)
            } catch {
                throw RouterError.coldStartFailed(address, reason: "\(error)")
            }
        }
        let replacementDeadline = RequestDeadline.earliest(deadline, .now + Self.replacementWait)!
        if self.topology.replicas(for: address).isEmpty, self.coldStart != nil {
            // Under a coordinator, a topology without a replica of the expert may be passing: replicas register
            // again after a partition, a replacement is on its way. Wait for one, briefly, within the deadline.
            _ = await self.waitForReplica(of: address, other: [], until: replacementDeadline)
        }
        guard !self.topology.replicas(for: address).isEmpty else { throw RouterError.noReplica(address) }
        let call = ExpertCall([rows], wireDType: self.wireDType)

        var failures: [ReplicaFailure] = []
        // Replicas tried, by connection: one that left and came back (a new connection) may be tried again.
        var tried = Set<TriedReplica>()
        var passes = 1
        while true {
            var candidates = self.scheduler.order(self.topology.replicas(for: address), for: address)
                .filter { !tried.contains(TriedReplica($0)) }
            if candidates.isEmpty, passes < Self.maxPasses, !failures.isEmpty,
                failures.allSatisfy(\.departed)
            {
                // Every replica was left because it was ejected (slow), none because it failed: an ejection alone
                // must not fail a call, so the replicas still in the topology are tried again, best first.
                passes += 1
                tried = []
                failures = []
                candidates = self.scheduler.order(self.topology.replicas(for: address), for: address)
            }
            if !candidates.isEmpty {
                if let response = try await self.attempt(
                    call, candidates: candidates, deadline: deadline, tried: &tried, failures: &failures)
                {
                    return try Self.decode(response.response, call: call, replica: response.replica)[0]
                }
                continue
            }
            // Every replica failed. Under a coordinator, a replica that died is replaced: wait for the topology to
            // name another (briefly, within the deadline).
            if let deadline, .now >= deadline { throw RouterError.deadlineExceeded(address, tried: tried.count) }
            guard self.coldStart != nil,
                await self.waitForReplica(of: address, other: tried, until: replacementDeadline)
            else {
                throw RouterError.expertUnavailable(
                    address, endpoint: tried.map(\.endpoint).sorted().last ?? ServiceEndpoint(host: "?", port: 0),
                    reason: "all \(tried.count) replicas failed: " + failures.map(\.description).joined(separator: "; ")
                )
            }
        }
    }

    private enum Outcome: Sendable {
        case answered(ExpertReplica, Moemesh_V1_ComputeResponse, hedge: Bool)
        /// Could not reach the replica, or it left; `reason` nil: left (ejected elsewhere, or gone from the topology).
        case unreachable(ExpertReplica, reason: String?)
        case hedgeDue
        case stalled
    }

    /// Calls `candidates[0]`, hedging to the next when it is slow, and moving on to the next candidates as attempts
    /// fail. Returns the first answer, or nil when every candidate failed (they are then in `tried`).
    private func attempt(
        _ call: ExpertCall, candidates: [ExpertReplica], deadline: ContinuousClock.Instant?,
        tried: inout Set<TriedReplica>, failures: inout [ReplicaFailure]
    ) async throws -> (replica: ExpertReplica, response: Moemesh_V1_ComputeResponse)? {
        let address = call.address
        if candidates.count == 1 {
            // One replica to try: no hedge, no stall watch, so no task group either.
            let replica = candidates[0]
            tried.insert(TriedReplica(replica))
            let callDeadline = try self.callDeadline(within: deadline, address: address, tried: tried.count)
            switch try await self.send(call, to: replica, deadline: callDeadline, hedge: false) {
            case .answered(let replica, let response, _): return (replica, response)
            case .unreachable(let replica, let reason):
                failures.append(ReplicaFailure(endpoint: replica.endpoint, reason: reason))
                self.count("moemesh_router_expert_retries_total", call)
                return nil
            case .hedgeDue, .stalled: return nil
            }
        }
        var remaining = candidates[...]
        return try await withThrowingTaskGroup(of: Outcome.self) { group in
            var inFlight: [ServiceEndpoint: Bool] = [:]  // endpoint → is a hedge
            func start(hedge: Bool) throws -> Bool {
                guard let replica = remaining.popFirst() else { return false }
                tried.insert(TriedReplica(replica))
                inFlight[replica.endpoint] = hedge
                let callDeadline = try self.callDeadline(within: deadline, address: address, tried: tried.count)
                group.addTask { try await self.send(call, to: replica, deadline: callDeadline, hedge: hedge) }
                return true
            }
            _ = try start(hedge: false)
            if remaining.first != nil {
                if let delay = call.hedgeDelay(self.scheduler) {
                    group.addTask {
                        try await Task.sleep(for: delay)  // the hedge delay
                        return .hedgeDue
                    }
                }
                let stall = call.stallTimeout(self.scheduler)
                group.addTask {
                    try await Task.sleep(for: stall)  // the stall timeout
                    return .stalled
                }
            }
            let started = ContinuousClock.now
            while let outcome = try await group.next() {
                switch outcome {
                case .answered(let replica, let response, let hedge):
                    if hedge {
                        self.count("moemesh_router_hedge_wins_total", call)
                        for (endpoint, isHedge) in inFlight where !isHedge {
                            self.scheduler.hedgeWon(against: endpoint)
                        }
                    }
                    group.cancelAll()
                    return (replica, response)
                case .unreachable(let replica, let reason):
                    inFlight[replica.endpoint] = nil
                    failures.append(ReplicaFailure(endpoint: replica.endpoint, reason: reason))
                    self.count("moemesh_router_expert_retries_total", call)
                    if inFlight.isEmpty, try !start(hedge: false) {
                        group.cancelAll()
                        return nil
                    }
                case .hedgeDue:
                    guard inFlight.count == 1, remaining.first != nil, self.scheduler.takeHedge() else { continue }
                    self.count("moemesh_router_hedges_total", call)
                    _ = try start(hedge: true)
                case .stalled:
                    // No answer for far longer than the expert takes: the replicas still holding the call are taken
                    // for hung; their ejection ends the calls here (they come back as `unreachable`).
                    for endpoint in inFlight.keys { self.scheduler.callStalled(endpoint, waited: .now - started) }
                }
            }
            return nil
        }
    }

    /// One `Compute` call to `replica`, ended early if the replica leaves this router's choice.
    private func send(
        _ call: ExpertCall, to replica: ExpertReplica, deadline: ContinuousClock.Instant, hedge: Bool
    ) async throws -> Outcome {
        let address = call.address
        let endpoint = replica.endpoint
        self.scheduler.callStarted(endpoint)
        let started = ContinuousClock.now
        let response: Moemesh_V1_ComputeResponse?
        do {
            response = try await self.scheduler.unlessDeparting(endpoint) {
                try await self.tracer.withSpan("moemesh.v1.Expert/Compute", ofKind: .client) { span in
                    span.attributes["rpc.system"] = "grpc"
                    span.attributes["moemesh.layer"] = address.layer
                    span.attributes["moemesh.expert"] = address.expert
                    span.attributes["moemesh.experts"] = call.parts.map { "\($0.address.expert)" }.joined(
                        separator: ",")
                    span.attributes["moemesh.rows"] = call.rows
                    span.attributes["moemesh.hedge"] = hedge
                    span.attributes["server.address"] = endpoint.description
                    return try await replica.compute(
                        call.request, metadata: propagatedMetadata(tracer: self.tracer), deadline: deadline)
                }
            }
        } catch let error as RPCError where Self.isReachabilityFailure(error.code) && !Task.isCancelled {
            let reason = "\(error.code): \(error.message)"
            self.scheduler.callEnded(endpoint, unreachable: reason)
            return .unreachable(replica, reason: reason)
        } catch let error as RPCError where error.code == .resourceExhausted && !Task.isCancelled {
            // Too loaded to meet the deadline (or the connection's call limit): the client may retry later or
            // elsewhere; the replica is not at fault, so it stays in the router's choice.
            self.scheduler.callEnded(endpoint)
            throw RouterError.expertOverloaded(address, endpoint: endpoint, reason: error.message)
        } catch let error as RPCError where error.code == .invalidArgument && !Task.isCancelled {
            // The router checked the rows' form: an expert that still refuses them refuses their values (another
            // replica would too).
            self.scheduler.callEnded(endpoint)
            throw RouterError.expertRejectedInput(address, reason: error.message)
        } catch let error as RPCError where !Task.isCancelled {
            self.scheduler.callEnded(endpoint)
            throw RouterError.expertFailed(address, endpoint: endpoint, reason: "\(error.code): \(error.message)")
        } catch {
            self.scheduler.callEnded(endpoint)
            throw error
        }
        guard let response else {
            // The replica left this router's choice (ejected, or gone from the topology) while the call ran.
            self.scheduler.callEnded(endpoint)
            try Task.checkCancellation()
            return .unreachable(replica, reason: nil)
        }
        let latency = ContinuousClock.now - started
        self.scheduler.callSucceeded(endpoint, experts: call.parts, latency: latency)
        for part in call.parts {
            self.metrics?.timer("moemesh_router_expert_call_seconds", part.address.metricLabels).record(
                duration: latency)
        }
        self.metrics?.counter("moemesh_router_expert_messages_total").increment()
        return .answered(replica, response, hedge: hedge)
    }

    /// The deadline of one expert call: `--expert-timeout-ms` from now, or the client's `deadline` if sooner.
    private func callDeadline(within deadline: ContinuousClock.Instant?, address: ExpertAddress, tried: Int) throws
        -> ContinuousClock.Instant
    {
        let now = ContinuousClock.now
        guard let deadline else { return now + self.expertTimeout }
        guard deadline > now else { throw RouterError.deadlineExceeded(address, tried: tried) }
        return min(deadline, now + self.expertTimeout)
    }

    /// The answer split into each part's `[n_e, H]`.
    private static func decode(_ response: Moemesh_V1_ComputeResponse, call: ExpertCall, replica: ExpertReplica) throws
        -> [Matrix]
    {
        let decoded: DecodedRows
        do {
            decoded = try response.rows.decodeTokenRows(
                field: "expert answer", hiddenSize: call.width, allowedRanks: [2], shapeDescription: "[N, H]")
        } catch {
            throw RouterError.expertFailed(call.address, endpoint: replica.endpoint, reason: error.description)
        }
        guard decoded.matrix.rows == call.rows else {
            throw RouterError.expertFailed(
                call.address, endpoint: replica.endpoint,
                reason: "answered \(decoded.matrix.rows) rows for the \(call.rows) sent")
        }
        guard call.parts.count > 1 else { return [decoded.matrix] }
        var start = 0
        return call.parts.map { part in
            defer { start += part.rows * call.width }
            return Matrix(
                rows: part.rows, columns: call.width,
                values: Array(decoded.matrix.values[start..<(start + part.rows * call.width)]))
        }
    }

    private func count(_ counter: String, _ call: ExpertCall) {
        guard let metrics = self.metrics else { return }
        for part in call.parts { metrics.counter(counter, part.address.metricLabels).increment() }
    }
}

/// What one `Compute` message carries: one expert's rows, or the rows of several experts of a layer for a replica
/// that hosts them all (`experts`, `row_counts`), gathered straight into the message.
struct ExpertCall: Sendable {
    let request: Moemesh_V1_ComputeRequest
    /// Each expert and its rows, in the message's order.
    let parts: [(address: ExpertAddress, rows: Int)]
    /// H.
    let width: Int

    init(_ rows: [ExpertRows], wireDType: DType) {
        let width = rows[0].width
        let parts = rows.map { (address: $0.address, rows: $0.count) }
        let total = parts.reduce(0) { $0 + $1.rows }
        var request = Moemesh_V1_ComputeRequest()
        request.layer = rows[0].layer
        request.expert = Int32(rows[0].expert)
        if rows.count > 1 {
            request.experts = rows.map { Int32($0.expert) }
            request.rowCounts = parts.map { UInt32($0.rows) }
        }
        request.rows = Moemesh_V1_Tensor(count: total * width, shape: [total, width], dtype: wireDType) { buffer in
            var start = 0
            for part in rows {
                part.gather(into: UnsafeMutableBufferPointer(rebasing: buffer[start..<(start + part.count * width)]))
                start += part.count * width
            }
        }
        self.request = request
        self.parts = parts
        self.width = width
    }

    /// The first expert: the one errors and spans name.
    var address: ExpertAddress { self.parts[0].address }
    /// N, every part's rows.
    var rows: Int { self.parts.reduce(0) { $0 + $1.rows } }

    /// The longest of the parts' hedge delays (a message is as slow as its slowest part); nil when any has none.
    func hedgeDelay(_ scheduler: ReplicaScheduler) -> Duration? {
        var longest = Duration.zero
        for part in self.parts {
            guard let delay = scheduler.hedgeDelay(for: part.address, rows: part.rows) else { return nil }
            longest = max(longest, delay)
        }
        return longest
    }

    /// The longest of the parts' stall timeouts.
    func stallTimeout(_ scheduler: ReplicaScheduler) -> Duration {
        self.parts.map { scheduler.stallTimeout(for: $0.address, rows: $0.rows) }.max()!
    }
}

extension RemoteExpertExecutor {
    /// The experts of a batch, one message per replica: parts whose chosen replica hosts other parts too go to it
    /// together (`ExpertCall`); a part alone goes through `compute(_:)` (hedges, failover, cold start as ever).
    public func compute(_ parts: [ExpertRows]) async -> ExpertOutputs {
        let groups = self.groupedByReplica(parts)
        if groups.count == parts.count { return await self.computeEach(parts) }
        @Sendable func run(_ group: ReplicaGroup) async throws -> [Matrix] {
            guard let replica = group.replica, group.indices.count > 1 else {
                return [try await self.compute(parts[group.indices[0]])]
            }
            return try await self.computeTogether(group.indices.map { parts[$0] }, first: replica)
        }
        if groups.count == 1 {
            var result = ExpertOutputs(count: parts.count)
            do { result.collect(groups[0].indices, try await run(groups[0])) } catch { result.failed(error) }
            return result
        }
        return await withThrowingTaskGroup(of: ([Int], [Matrix]).self) { group in
            for replicaGroup in groups { group.addTask { (replicaGroup.indices, try await run(replicaGroup)) } }
            var result = ExpertOutputs(count: parts.count)
            while true {
                do {
                    guard let (indices, outputs) = try await group.next() else { return result }
                    result.collect(indices, outputs)
                } catch {
                    if result.failure == nil { group.cancelAll() }
                    result.failed(error)
                }
            }
        }
    }

    /// The parts of a batch that go to one replica (nil: a part without a replica, alone).
    struct ReplicaGroup: Sendable {
        let replica: ExpertReplica?
        var indices: [Int]
    }

    /// `parts` by the replica each goes to: a replica chosen for an earlier part when it hosts this one too (and is
    /// not ejected), else the scheduler's first choice for it.
    func groupedByReplica(_ parts: [ExpertRows]) -> [ReplicaGroup] {
        var groups: [ReplicaGroup] = []
        var groupOf: [TriedReplica: Int] = [:]
        for (index, part) in parts.enumerated() {
            let ordered = self.scheduler.order(self.topology.replicas(for: part.address), for: part.address)
            guard let first = ordered.first else {
                groups.append(ReplicaGroup(replica: nil, indices: [index]))
                continue
            }
            let chosen =
                ordered.first { groupOf[TriedReplica($0)] != nil && !self.scheduler.isEjected($0.endpoint) } ?? first
            if let group = groupOf[TriedReplica(chosen)] {
                groups[group].indices.append(index)
            } else {
                groupOf[TriedReplica(chosen)] = groups.count
                groups.append(ReplicaGroup(replica: chosen, indices: [index]))
            }
        }
        return groups
    }

    /// Several experts' rows in one message to `first`, a replica that hosts them all (another such replica when it
    /// fails, a hedge to one when it is slow); when every such replica failed, each part goes its own way.
    func computeTogether(_ parts: [ExpertRows], first: ExpertReplica) async throws -> [Matrix] {
        let deadline = RequestDeadline.current.map { $0 - Self.combineMargin }
        for part in parts { self.demand?.record(part.address, rows: part.count) }
        let hostsAll = parts.reduce(into: Set(self.topology.replicas(for: parts[0].address).map(TriedReplica.init))) {
            hosts, part in hosts.formIntersection(self.topology.replicas(for: part.address).map(TriedReplica.init))
        }
        let others = self.scheduler.order(self.topology.replicas(for: parts[0].address), for: parts[0].address)
            .filter { hostsAll.contains(TriedReplica($0)) && TriedReplica($0) != TriedReplica(first) }
        // `first` may have left the topology since it was chosen: then only the others.
        let candidates = (hostsAll.contains(TriedReplica(first)) ? [first] : []) + others
        if !candidates.isEmpty {
            let call = ExpertCall(parts, wireDType: self.wireDType)
            var tried = Set<TriedReplica>()
            var failures: [ReplicaFailure] = []
            if let answer = try await self.attempt(
                call, candidates: candidates, deadline: deadline, tried: &tried, failures: &failures)
            {
                return try Self.decode(answer.response, call: call, replica: answer.replica)
            }
        }
        return try await withThrowingTaskGroup(of: (Int, Matrix).self) { group in
            for (index, part) in parts.enumerated() {
                group.addTask { (index, try await self.compute(part, countingDemand: false)) }
            }
            var outputs = [Matrix?](repeating: nil, count: parts.count)
            for try await (index, output) in group { outputs[index] = output }
            return outputs.map { $0! }
        }
    }
}

extension RemoteExpertExecutor {
    /// The router's prefetch hook under `routing`: hints (`prefetch`) sent by `hints` with `--prefetch-next-layer`,
    /// nil without, so that a router without it never sends one.
    public func prefetchHook(_ routing: RoutingConfiguration, hints: PrefetchHints) -> PrefetchHook? {
        guard routing.prefetchNextLayer else { return nil }
        return { addresses in self.prefetch(addresses, hints: hints) }
    }

    /// Queues one `Prefetch` hint to each replica serving any of `addresses`, naming the experts it serves, on
    /// `hints`; returns at once. A hint that fails or is dropped changes nothing (the `Compute` call loads the expert
    /// as without it): `hints` counts it.
    public func prefetch(_ addresses: [ExpertAddress], hints: PrefetchHints) {
        var experts: [ServiceEndpoint: [ExpertAddress]] = [:]
        var replicas: [ServiceEndpoint: ExpertReplica] = [:]
        for address in addresses {
            for replica in self.topology.replicas(for: address) {
                experts[replica.endpoint, default: []].append(address)
                replicas[replica.endpoint] = replica
            }
        }
        let deadline = ContinuousClock.now + self.expertTimeout
        for (endpoint, addresses) in experts {
            let replica = replicas[endpoint]!
            let request = Moemesh_V1_PrefetchRequest.with { $0.experts = addresses.map(Moemesh_V1_ExpertKey.init) }
            hints.send { _ = try await replica.prefetch(request, deadline: deadline) }
        }
    }

    /// Why an attempt ended when its replica left this router's choice.
    static let departed = "left the topology or was ejected"
    /// Rounds over an expert's replicas when they were only ejected, not failing.
    static let maxPasses = 3

    /// How long a call whose replicas all failed waits for the coordinator to name a replacement.
    static let replacementWait: Duration = .seconds(10)

    /// Whether the topology names a replica of `address` not in `tried` by `deadline` (a replica that was tried
    /// and came back over a new connection counts).
    func waitForReplica(
        of address: ExpertAddress, other tried: Set<TriedReplica>, until deadline: ContinuousClock.Instant
    ) async -> Bool {
        await self.topology.waitForReplica(of: address, until: deadline) { !tried.contains(TriedReplica($0)) }
    }

    /// A replica as tried by one call: its endpoint over one connection.
    struct TriedReplica: Hashable, Sendable {
        let endpoint: ServiceEndpoint
        let connection: UInt64

        init(_ replica: ExpertReplica) {
            self.endpoint = replica.endpoint
            self.connection = replica.connection
        }
    }

    /// Codes that say the replica could not serve the call (not that the call was wrong): try another one.
    static func isReachabilityFailure(_ code: RPCError.Code) -> Bool {
        code == .unavailable || code == .deadlineExceeded || code == .cancelled
    }
}

/// Why the call left a replica: it failed (`reason`), or it departed (nil: ejected elsewhere, or gone from the
/// topology), which alone must not fail a call.
struct ReplicaFailure: Sendable, CustomStringConvertible {
    let endpoint: ServiceEndpoint
    let reason: String?

    var departed: Bool { self.reason == nil }
    var description: String { "\(self.endpoint): \(self.reason ?? RemoteExpertExecutor.departed)" }
}
