import GRPCCore
import MoECore
import MoEProto
import MoERuntime
import MoEServing

/// Runs an expert through its service: one `Compute` RPC carrying the expert's rows, gathered straight into the
/// outgoing message.
public struct RemoteExpertExecutor: ExpertExecutor {
    public let topology: ExpertTopology
    public let wireDType: DType
    public let callOptions: CallOptions

    public init(topology: ExpertTopology, wireDType: DType, callOptions: CallOptions) {
        self.topology = topology
        self.wireDType = wireDType
        self.callOptions = callOptions
    }

    public func compute(_ rows: ExpertRows) async throws -> Matrix {
        let address = ExpertAddress(layer: rows.layer, expert: rows.expert)
        guard let replica = self.topology.chooseReplica(for: address) else { throw RouterError.noReplica(address) }
        var request = Moemesh_V1_ComputeRequest()
        request.layer = rows.layer
        request.expert = Int32(rows.expert)
        request.rows = Moemesh_V1_Tensor(
            count: rows.count * rows.width, shape: [rows.count, rows.width], dtype: self.wireDType,
            gather: rows.gather(into:))

        let response: Moemesh_V1_ComputeResponse
        do {
            response = try await replica.compute(request, options: self.callOptions)
        } catch let error as RPCError {
            switch error.code {
            case .unavailable, .deadlineExceeded, .cancelled:
                throw RouterError.expertUnavailable(address, endpoint: replica.endpoint, reason: "\(error.code): \(error.message)")
            default:
                throw RouterError.expertFailed(address, endpoint: replica.endpoint, reason: "\(error.code): \(error.message)")
            }
        }
        let decoded: DecodedRows
        do {
            decoded = try response.rows.decodeTokenRows(
                field: "expert answer", hiddenSize: rows.width, allowedRanks: [2], shapeDescription: "[N, H]")
        } catch {
            throw RouterError.expertFailed(address, endpoint: replica.endpoint, reason: error.description)
        }
        guard decoded.matrix.rows == rows.count else {
            throw RouterError.expertFailed(
                address, endpoint: replica.endpoint, reason: "answered \(decoded.matrix.rows) rows for the \(rows.count) sent")
        }
        return decoded.matrix
    }
}
