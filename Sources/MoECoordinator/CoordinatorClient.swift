import GRPCCore
import GRPCNIOTransportHTTP2
import MoECore
import MoEProto
import MoEServing
import MoEWire

/// A client of the coordinator's status and admin calls, for tools and tests.
public struct CoordinatorClient: Sendable {
    public let client: Moemesh_V1_Coordinator.Client<HTTP2ClientTransport.Posix>
    public let serving: ServingConfiguration

    /// Runs `withGRPCClient` against `endpoint` and hands a coordinator client to `body`.
    public static func with<Result: Sendable>(
        endpoint: ServiceEndpoint, serving: ServingConfiguration = ServingConfiguration(),
        _ body: (CoordinatorClient) async throws -> Result
    ) async throws -> Result {
        try await serving.withClient(to: endpoint) { client in
            try await body(CoordinatorClient(client: .init(wrapping: client), serving: serving))
        }
    }

    public func status() async throws -> Moemesh_V1_CoordinatorStatus {
        try await self.client.getStatus(
            Moemesh_V1_GetStatusRequest(), options: self.serving.callOptions(timeout: .seconds(5)))
    }

    /// Prunes `address` from routing (or restores it); returns every pruned expert.
    public func setPruned(_ address: ExpertAddress, pruned: Bool) async throws -> [ExpertAddress] {
        let request = Moemesh_V1_SetPrunedRequest.with {
            $0.expert = Moemesh_V1_ExpertKey(address)
            $0.pruned = pruned
        }
        return try await self.client.setPruned(request, options: self.serving.callOptions(timeout: .seconds(5))).pruned
            .map(\.address)
    }

    public func drain(replica id: String) async throws -> Moemesh_V1_Replica {
        let request = Moemesh_V1_DrainReplicaRequest.with { $0.replicaID = id }
        return try await self.client.drainReplica(request, options: self.serving.callOptions(timeout: .seconds(5)))
            .replica
    }
}
