import GRPCCore
import MoECore
import MoEProto

/// The largest tensor a service takes (`--max-message-mib`): a larger one is refused with `RESOURCE_EXHAUSTED`
/// naming the limit, before it is decoded. (The transport's own limit sits above this one: past it, a stream is
/// reset without a status.)
public struct PayloadLimit: Sendable, Equatable {
    public let bytes: Int

    public init(bytes: Int) { self.bytes = bytes }

    public func check(_ tensor: Moemesh_V1_Tensor, field: String) throws(PayloadTooLarge) {
        guard tensor.data.count <= self.bytes else {
            throw PayloadTooLarge(field: field, bytes: tensor.data.count, limit: self.bytes)
        }
    }
}

/// A tensor above the service's `PayloadLimit`.
public struct PayloadTooLarge: Error, Sendable, Equatable, RPCErrorConvertible {
    public let field: String
    public let bytes: Int
    public let limit: Int

    public init(field: String, bytes: Int, limit: Int) {
        self.field = field
        self.bytes = bytes
        self.limit = limit
    }

    public var rpcErrorCode: RPCError.Code { .resourceExhausted }
    public var rpcErrorMessage: String {
        "\(self.field): \(DecimalFormat.fixed(Double(self.bytes) / 1_048_576, 1)) MiB, above this service's limit of "
            + "\(DecimalFormat.fixed(Double(self.limit) / 1_048_576, 1)) MiB (--max-message-mib); send fewer tokens per call"
    }
}
