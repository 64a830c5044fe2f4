import GRPCCore
import MoEDataPlane
import SwiftProtobuf
import GRPCNIOTransportHTTP2
import MoECore
import MoEProto
import MoEServing
import Synchronization

/// One expert service the router talks to, over one persistent data-plane connection (gRPC's C++ core); with a
/// `ComputeStreamChannel`, its `Compute` calls go over that stream.
public struct ExpertReplica: Sendable {
    public let endpoint: ServiceEndpoint
    /// Which connection to `endpoint` this is (`ExpertConnections` numbers them): a replica that left the topology
    /// and came back (registered again after a partition) is reached over a new one.
    public let connection: UInt64
    /// The long-lived stream the calls use; nil: one unary `Compute` RPC per call.
    public let stream: ComputeStreamChannel?
    private let call:
        @Sendable (Moemesh_V1_ComputeRequest, Metadata, ContinuousClock.Instant?) async throws ->
            Moemesh_V1_ComputeResponse
    private let describeCall: @Sendable (ContinuousClock.Instant?) async throws -> Moemesh_V1_DescribeExpertsResponse
    private let prefetchCall:
        @Sendable (Moemesh_V1_PrefetchRequest, ContinuousClock.Instant?) async throws -> Moemesh_V1_PrefetchResponse

    /// A replica reached over a data-plane channel (gRPC's C++ core); `metadata` (the bearer token) goes with every
    /// call.
    public init(
        endpoint: ServiceEndpoint, channel: DataPlaneChannel, metadata: Metadata, stream: ComputeStreamChannel? = nil,
        connection: UInt64 = 0
    ) {
        self.endpoint = endpoint
        self.connection = connection
        self.stream = stream
        @Sendable func unary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
            _ method: String, _ request: Request, _ extra: Metadata, _ deadline: ContinuousClock.Instant?
        ) async throws -> Response {
            var all = metadata
            all.add(contentsOf: extra)
            let answer = try await channel.unary(
                method, request: try request.serializedBytes(), metadata: all, deadline: deadline, waitForReady: true)
            return try DataPlaneCalls.decode(Response.self, answer)
        }
        self.call = { request, extra, deadline in
            try await unary("/moemesh.v1.Expert/Compute", request, extra, deadline)
        }
        self.describeCall = { deadline in
            try await unary("/moemesh.v1.Expert/DescribeExperts", Moemesh_V1_DescribeExpertsRequest(), [:], deadline)
        }
        self.prefetchCall = { request, deadline in
            try await unary("/moemesh.v1.Expert/Prefetch", request, [:], deadline)
        }
    }

    /// `Prefetch`: a hint that these experts will be needed soon (answered by `deadline`; nil: none).
    public func prefetch(_ request: Moemesh_V1_PrefetchRequest, deadline: ContinuousClock.Instant? = nil) async throws
        -> Moemesh_V1_PrefetchResponse
    {
        try await self.prefetchCall(request, deadline)
    }

    /// `DescribeExperts`: what the service hosts (answered by `deadline`; nil: none).
    public func describe(deadline: ContinuousClock.Instant? = nil) async throws -> Moemesh_V1_DescribeExpertsResponse {
        try await self.describeCall(deadline)
    }

    /// One `Compute` call answered by `deadline`: a message on the stream when there is one, else a unary RPC.
    public func compute(
        _ request: Moemesh_V1_ComputeRequest, metadata: Metadata = [:], deadline: ContinuousClock.Instant
    ) async throws -> Moemesh_V1_ComputeResponse {
        if let stream = self.stream {
            return try await stream.compute(request, metadata: metadata, deadline: deadline)
        }
        return try await self.call(request, metadata, deadline)
    }
}

/// Which replicas serve each expert: fixed at start (`--expert` lists) or replaced by each topology the coordinator
/// sends, with the experts it can start on demand and those pruned from routing. Which of them gets a call is the
/// `ReplicaScheduler`'s to decide; it hears of replicas that leave (`onRemoved`).
public final class ExpertTopology: Sendable {
    private struct State {
        var replicas: [ExpertAddress: [ExpertReplica]]
        var startable: Set<ExpertAddress> = []
        var pruned: [String: Set<Int>] = [:]
        /// Expert → precision → serving replicas holding it so.
        var precisions: [ExpertAddress: [String: Int]] = [:]
        var version: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter: UInt64 = 0
    }

    private let state: Mutex<State>
    private let onRemoved: @Sendable (Set<ServiceEndpoint>) -> Void

    public init(
        replicas: [ExpertAddress: [ExpertReplica]],
        onRemoved: @escaping @Sendable (Set<ServiceEndpoint>) -> Void = { _ in }
    ) {
        self.state = Mutex(State(replicas: replicas))
        self.onRemoved = onRemoved
    }

    /// Replaces the replicas (a new topology from the coordinator); calls in flight at replicas it no longer names
    /// are ended (`onRemoved`) and sent elsewhere, except at `draining` ones, which get no new calls but finish theirs.
    public func update(
        replicas: [ExpertAddress: [ExpertReplica]], startable: Set<ExpertAddress>, pruned: Set<ExpertAddress>,
        version: UInt64, draining: Set<ServiceEndpoint> = []
    ) {
        let (removed, waiters) = self.state.withLock { state in
            let before = Set(state.replicas.values.joined().map(\.endpoint)).subtracting(draining)
            state.replicas = replicas
            state.startable = startable
            state.pruned = Dictionary(grouping: pruned, by: \.layer).mapValues { Set($0.map(\.expert)) }
            state.version = version
            defer { state.waiters = [:] }
            return (before.subtracting(replicas.values.joined().map(\.endpoint)), Array(state.waiters.values))
        }
        if !removed.isEmpty { self.onRemoved(removed) }
        for waiter in waiters { waiter.resume() }
    }

    /// Adds replicas (a cold start's answer) without dropping any.
    public func add(_ replicas: [ExpertAddress: [ExpertReplica]]) {
        let waiters = self.state.withLock { state in
            for (address, added) in replicas {
                let known = Set((state.replicas[address] ?? []).map(\.endpoint))
                state.replicas[address, default: []] += added.filter { !known.contains($0.endpoint) }
                state.startable.remove(address)
            }
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Records how the replicas store each expert's weights: expert → precision → replicas.
    public func setPrecisions(_ precisions: [ExpertAddress: [String: Int]]) {
        self.state.withLock { $0.precisions = precisions }
    }

    /// Expert → precision → serving replicas holding it so, as the replicas said.
    public var precisions: [ExpertAddress: [String: Int]] { self.state.withLock { $0.precisions } }

    /// The version of the coordinator's topology in use (0: none yet, or a fixed topology).
    public var version: UInt64 { self.state.withLock { $0.version } }

    public var addresses: [ExpertAddress] { self.state.withLock { Array($0.replicas.keys) }.sorted() }

    public func replicaCount(of address: ExpertAddress) -> Int {
        self.state.withLock { $0.replicas[address]?.count ?? 0 }
    }

    /// The replicas serving `address`, in topology order.
    public func replicas(for address: ExpertAddress) -> [ExpertReplica] {
        self.state.withLock { $0.replicas[address] ?? [] }
    }

    /// Whether the coordinator can start a replica of `address`, which has none now.
    public func isStartable(_ address: ExpertAddress) -> Bool { self.state.withLock { $0.startable.contains(address) } }

    /// Experts of `layer` masked out of routing.
    public func pruned(layer: String) -> Set<Int> { self.state.withLock { $0.pruned[layer] ?? [] } }

    /// Experts with neither a replica nor a way to start one.
    public func uncovered(_ addresses: [ExpertAddress]) -> [ExpertAddress] {
        self.state.withLock { state in
            addresses.filter { (state.replicas[$0]?.isEmpty ?? true) && !state.startable.contains($0) }
        }
    }

    /// Returns once `condition` holds of the topology (checked now and at every change), or false when `deadline`
    /// passes or the task is cancelled first.
    public func wait(until deadline: ContinuousClock.Instant, for condition: @Sendable (ExpertTopology) -> Bool) async
        -> Bool
    {
        while !condition(self) {
            guard ContinuousClock.now < deadline, !Task.isCancelled else { return false }
            await self.nextChange(before: deadline)
        }
        return true
    }

    /// Whether a replica of `address` that `isNew` accepts is named by `deadline`.
    public func waitForReplica(
        of address: ExpertAddress, until deadline: ContinuousClock.Instant,
        where isNew: @escaping @Sendable (ExpertReplica) -> Bool
    ) async -> Bool {
        await self.wait(until: deadline) { topology in topology.replicas(for: address).contains(where: isNew) }
    }

    /// Returns at the next change of the topology, at `deadline`, or when the task is cancelled.
    private func nextChange(before deadline: ContinuousClock.Instant) async {
        let id = self.state.withLock { state in
            state.nextWaiter &+= 1
            return state.nextWaiter
        }
        let wake: @Sendable () -> Void = {
            let waiter = self.state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
        await withTaskCancellationHandler {
            await untilFirstEnds(
                {
                    await withCheckedContinuation { continuation in
                        let now = self.state.withLock { state -> Bool in
                            if Task.isCancelled { return true }
                            state.waiters[id] = continuation
                            return false
                        }
                        if now { continuation.resume() }
                    }
                },
                {
                    // The deadline wakes the waiter too: a timer, not a poll.
                    try? await Task.sleep(until: deadline, clock: .continuous)
                    wake()
                })
            wake()
        } onCancel: {
            wake()
        }
    }
}
