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

    /// The coordinator's status.
    /// - Throws: `RPCError` from the call; `INTERNAL` when its co-activation counts are malformed.
    public func status() async throws -> CoordinatorStatus {
        let message = try await self.client.getStatus(
            Moemesh_V1_GetStatusRequest(), options: self.serving.callOptions(timeout: .seconds(5)))
        do {
            return try CoordinatorStatus(message)
        } catch {
            throw RPCError(code: .internalError, message: "the coordinator's status: \(error)")
        }
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

    /// Replaces the coordinator's groups with `groups` (name, `--experts` selection, replicas); waits up to
    /// `timeout` for the new ones to serve.
    public func applyPlan(_ groups: [(name: String, selection: String, replicas: Int)], timeout: Duration) async throws
        -> Moemesh_V1_ApplyPlanResponse
    {
        let request = Moemesh_V1_ApplyPlanRequest.with {
            $0.groups = groups.map { group in
                .with {
                    $0.name = group.name
                    $0.selection = group.selection
                    $0.replicas = Int32(clamping: group.replicas)
                }
            }
            $0.timeoutSeconds = UInt32(clamping: timeout.components.seconds)
        }
        return try await self.client.applyPlan(
            request, options: self.serving.callOptions(timeout: timeout + .seconds(10)))
    }

    public func drain(replica id: String) async throws -> Moemesh_V1_Replica {
        let request = Moemesh_V1_DrainReplicaRequest.with { $0.replicaID = id }
        return try await self.client.drainReplica(request, options: self.serving.callOptions(timeout: .seconds(5)))
            .replica
    }
}
