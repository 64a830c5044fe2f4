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

/// Which replicas serve each expert, and a round-robin choice among them.
public final class ExpertTopology: Sendable {
    private let replicas: [ExpertAddress: [ExpertReplica]]
    private let nextReplica: Mutex<[ExpertAddress: Int]>

    public init(replicas: [ExpertAddress: [ExpertReplica]]) {
        self.replicas = replicas
        self.nextReplica = Mutex([:])
    }

    public var addresses: [ExpertAddress] { self.replicas.keys.sorted() }

    public func replicaCount(of address: ExpertAddress) -> Int { self.replicas[address]?.count ?? 0 }

    /// The next replica of `address`, in turn; nil if none is known.
    public func chooseReplica(for address: ExpertAddress) -> ExpertReplica? {
        guard let candidates = self.replicas[address], !candidates.isEmpty else { return nil }
        let index = self.nextReplica.withLock { next in
            let index = next[address, default: 0]
            next[address] = (index + 1) % candidates.count
            return index
        }
        return candidates[index]
    }
}
