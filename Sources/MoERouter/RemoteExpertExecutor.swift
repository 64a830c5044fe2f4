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

    /// Sends the rows to the best replica; if it cannot be reached (`UNAVAILABLE`, deadline, connection lost), to
    /// the next, until every replica has been tried.
    public func compute(_ rows: ExpertRows) async throws -> Matrix {
        let address = rows.address
        let candidates = self.topology.candidates(for: address)
        guard !candidates.isEmpty else { throw RouterError.noReplica(address) }
        var request = Moemesh_V1_ComputeRequest()
        request.layer = rows.layer
        request.expert = Int32(rows.expert)
        request.rows = Moemesh_V1_Tensor(
            count: rows.count * rows.width, shape: [rows.count, rows.width], dtype: self.wireDType,
            gather: rows.gather(into:))

        var failures: [String] = []
        var answer: (replica: ExpertReplica, response: Moemesh_V1_ComputeResponse)? = nil
        for replica in candidates {
            self.topology.callStarted(replica.endpoint)
            do {
                let response = try await replica.compute(request, options: self.callOptions)
                self.topology.callEnded(replica.endpoint, failed: false)
                answer = (replica, response)
                break
            } catch let error as RPCError where Self.isReachabilityFailure(error.code) && !Task.isCancelled {
                self.topology.callEnded(replica.endpoint, failed: true)
                failures.append("\(replica.endpoint): \(error.code): \(error.message)")
            } catch let error as RPCError {
                self.topology.callEnded(replica.endpoint, failed: false)
                throw RouterError.expertFailed(address, endpoint: replica.endpoint, reason: "\(error.code): \(error.message)")
            } catch {
                self.topology.callEnded(replica.endpoint, failed: true)
                throw error
            }
        }
        guard let (replica, response) = answer else {
            throw RouterError.expertUnavailable(
                address, endpoint: candidates.last!.endpoint,
                reason: "all \(candidates.count) replicas failed: " + failures.joined(separator: "; "))
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

extension RemoteExpertExecutor {
    /// Codes that say the replica could not serve the call (not that the call was wrong): try another one.
    static func isReachabilityFailure(_ code: RPCError.Code) -> Bool {
        code == .unavailable || code == .deadlineExceeded || code == .cancelled
    }
}
