import GRPCCore
import GRPCNIOTransportHTTP2
import MoECore
import MoEProto
import MoEServing
import Synchronization

/// One expert service the router talks to, over one persistent connection of any gRPC transport.
public struct ExpertReplica: Sendable {
    public let endpoint: ServiceEndpoint
    private let call: @Sendable (Moemesh_V1_ComputeRequest, Metadata, CallOptions) async throws -> Moemesh_V1_ComputeResponse
    private let describeCall: @Sendable (CallOptions) async throws -> Moemesh_V1_DescribeExpertsResponse
    private let prefetchCall: @Sendable (Moemesh_V1_PrefetchRequest, CallOptions) async throws -> Moemesh_V1_PrefetchResponse

    public init<Transport: ClientTransport>(endpoint: ServiceEndpoint, client: Moemesh_V1_Expert.Client<Transport>) {
        self.endpoint = endpoint
        self.call = { request, metadata, options in try await client.compute(request, metadata: metadata, options: options) }
        self.describeCall = { options in try await client.describeExperts(Moemesh_V1_DescribeExpertsRequest(), options: options) }
        self.prefetchCall = { request, options in try await client.prefetch(request, options: options) }
    }

    /// `Prefetch`: a hint that these experts will be needed soon.
    public func prefetch(_ request: Moemesh_V1_PrefetchRequest, options: CallOptions) async throws -> Moemesh_V1_PrefetchResponse {
        try await self.prefetchCall(request, options)
    }

    /// `DescribeExperts`: what the service hosts.
    public func describe(options: CallOptions) async throws -> Moemesh_V1_DescribeExpertsResponse {
        try await self.describeCall(options)
    }

    /// One `Compute` call.
    public func compute(
        _ request: Moemesh_V1_ComputeRequest, metadata: Metadata = [:], options: CallOptions
    ) async throws -> Moemesh_V1_ComputeResponse {
        try await self.call(request, metadata, options)
    }
}

/// Which replicas serve each expert, and in what order to try them: replicas not seen failing recently first, then
/// fewest calls outstanding, ties taken in turn. Fixed at start (`--expert` lists) or replaced by each topology the
/// coordinator sends, with the experts it can start on demand and those pruned from routing.
public final class ExpertTopology: Sendable {
    private struct State {
        var replicas: [ExpertAddress: [ExpertReplica]]
        var startable: Set<ExpertAddress> = []
        var pruned: [String: Set<Int>] = [:]
        var version: UInt64 = 0
        var outstanding: [ServiceEndpoint: Int] = [:]
        var suspectUntil: [ServiceEndpoint: ContinuousClock.Instant] = [:]
        var turn: [ExpertAddress: Int] = [:]
    }

    /// How long a replica that failed is tried only after the others.
    public static let suspicion: Duration = .seconds(2)

    private let state: Mutex<State>

    public init(replicas: [ExpertAddress: [ExpertReplica]]) {
        self.state = Mutex(State(replicas: replicas))
    }

    /// Replaces the replicas (a new topology from the coordinator). Load counts of replicas that stay are kept.
    public func update(
        replicas: [ExpertAddress: [ExpertReplica]], startable: Set<ExpertAddress>, pruned: Set<ExpertAddress>,
        version: UInt64
    ) {
        self.state.withLock { state in
            state.replicas = replicas
            state.startable = startable
            state.pruned = Dictionary(grouping: pruned, by: \.layer).mapValues { Set($0.map(\.expert)) }
            state.version = version
        }
    }

    /// Adds replicas (a cold start's answer) without dropping any.
    public func add(_ replicas: [ExpertAddress: [ExpertReplica]]) {
        self.state.withLock { state in
            for (address, added) in replicas {
                let known = Set((state.replicas[address] ?? []).map(\.endpoint))
                state.replicas[address, default: []] += added.filter { !known.contains($0.endpoint) }
                state.startable.remove(address)
            }
        }
    }

    /// The version of the coordinator's topology in use (0: none yet, or a fixed topology).
    public var version: UInt64 { self.state.withLock { $0.version } }

    public var addresses: [ExpertAddress] { self.state.withLock { Array($0.replicas.keys) }.sorted() }

    public func replicaCount(of address: ExpertAddress) -> Int { self.state.withLock { $0.replicas[address]?.count ?? 0 } }

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

    /// Every replica of `address`, best first.
    public func candidates(for address: ExpertAddress) -> [ExpertReplica] {
        let now = ContinuousClock.now
        return self.state.withLock { state in
            guard let replicas = state.replicas[address], !replicas.isEmpty else { return [] }
            let turn = state.turn[address, default: 0]
            state.turn[address] = turn &+ 1
            let rotated = (0..<replicas.count).map { replicas[(turn + $0) % replicas.count] }
            // A stable sort keeps the rotation among equals.
            return rotated.enumerated().sorted { a, b in
                let suspectA = (state.suspectUntil[a.element.endpoint] ?? now) > now
                let suspectB = (state.suspectUntil[b.element.endpoint] ?? now) > now
                if suspectA != suspectB { return !suspectA }
                let loadA = state.outstanding[a.element.endpoint, default: 0]
                let loadB = state.outstanding[b.element.endpoint, default: 0]
                return loadA != loadB ? loadA < loadB : a.offset < b.offset
            }.map(\.element)
        }
    }

    /// The replica to try first, nil if none is known.
    public func chooseReplica(for address: ExpertAddress) -> ExpertReplica? { self.candidates(for: address).first }

    /// Counts a call to `endpoint` as outstanding.
    public func callStarted(_ endpoint: ServiceEndpoint) {
        self.state.withLock { $0.outstanding[endpoint, default: 0] += 1 }
    }

    /// Ends a call; a failed one makes the replica suspect for `suspicion`.
    public func callEnded(_ endpoint: ServiceEndpoint, failed: Bool) {
        self.state.withLock { state in
            state.outstanding[endpoint, default: 1] -= 1
            if failed { state.suspectUntil[endpoint] = .now + Self.suspicion }
        }
    }
}
