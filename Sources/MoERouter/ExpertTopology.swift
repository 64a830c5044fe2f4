import GRPCCore
import GRPCNIOTransportHTTP2
import MoECore
import MoEProto
import MoEServing
import Synchronization

/// One expert service the router talks to, over one persistent connection of any gRPC transport.
public struct ExpertReplica: Sendable {
    public let endpoint: ServiceEndpoint
    private let call: @Sendable (Moemesh_V1_ComputeRequest, CallOptions) async throws -> Moemesh_V1_ComputeResponse

    public init<Transport: ClientTransport>(endpoint: ServiceEndpoint, client: Moemesh_V1_Expert.Client<Transport>) {
        self.endpoint = endpoint
        self.call = { request, options in try await client.compute(request, options: options) }
    }

    /// One `Compute` call.
    public func compute(
        _ request: Moemesh_V1_ComputeRequest, options: CallOptions
    ) async throws -> Moemesh_V1_ComputeResponse {
        try await self.call(request, options)
    }
}

/// Which replicas serve each expert, and in what order to try them: replicas not seen failing recently first, then
/// fewest calls outstanding, ties taken in turn.
public final class ExpertTopology: Sendable {
    private struct State {
        var outstanding: [ServiceEndpoint: Int] = [:]
        var suspectUntil: [ServiceEndpoint: ContinuousClock.Instant] = [:]
        var turn: [ExpertAddress: Int] = [:]
    }

    /// How long a replica that failed is tried only after the others.
    public static let suspicion: Duration = .seconds(2)

    private let replicas: [ExpertAddress: [ExpertReplica]]
    private let state = Mutex(State())

    public init(replicas: [ExpertAddress: [ExpertReplica]]) {
        self.replicas = replicas
    }

    public var addresses: [ExpertAddress] { self.replicas.keys.sorted() }

    public func replicaCount(of address: ExpertAddress) -> Int { self.replicas[address]?.count ?? 0 }

    /// Every replica of `address`, best first.
    public func candidates(for address: ExpertAddress) -> [ExpertReplica] {
        guard let replicas = self.replicas[address], !replicas.isEmpty else { return [] }
        let now = ContinuousClock.now
        return self.state.withLock { state in
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
