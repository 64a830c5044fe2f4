import GRPCCore
import MoEProto

extension Moemesh_V1_CallError {
    /// The status `error` would end a unary call with: the code and message of a typed error or an `RPCError`,
    /// `CANCELLED` for a cancellation, `INTERNAL` otherwise.
    public init(_ error: any Error) {
        self.init()
        switch error {
        case let convertible as any RPCErrorConvertible:
            self.code = Int32(convertible.rpcErrorCode.rawValue)
            self.message = convertible.rpcErrorMessage
        case let rpc as RPCError:
            self.code = Int32(rpc.code.rawValue)
            self.message = rpc.message
        case is CancellationError:
            self.code = Int32(RPCError.Code.cancelled.rawValue)
            self.message = "the call was cancelled"
        default:
            self.code = Int32(RPCError.Code.internalError.rawValue)
            self.message = "\(error)"
        }
    }

    /// The same as an `RPCError` (an unknown code reads as `UNKNOWN`).
    public var rpcError: RPCError {
        RPCError(
            code: Status.Code(rawValue: Int(self.code)).flatMap { RPCError.Code($0) } ?? .unknown, message: self.message
        )
    }
}

extension Moemesh_V1_ComputeStreamResponse {
    /// The answer refusing `request` with `error`, in-message (the stream goes on).
    public static func refusing(_ request: Moemesh_V1_ComputeStreamRequest, _ error: any Error) -> Self {
        .with {
            $0.callID = request.callID
            $0.error = Moemesh_V1_CallError(error)
        }
    }
}
