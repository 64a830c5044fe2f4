import GRPCCore
import MoEProto

/// Answers every `Echo` with the tensor it was sent: the floor for one gRPC hop.
public struct EchoService: Moemesh_V1_Bench.SimpleServiceProtocol {
    public init() {}

    public func echo(request: Moemesh_V1_EchoRequest, context: ServerContext) async throws -> Moemesh_V1_EchoResponse {
        var response = Moemesh_V1_EchoResponse()
        response.tensor = request.tensor
        return response
    }
}
