import CGRPCBridge
import GRPCCore

/// Why a server or channel of the data plane could not be made.
public struct DataPlaneSetupError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension RPCError {
    /// The status a call ended with on the wire: `code` as gRPC numbers it.
    init(wireCode code: Int32, message: String) {
        self.init(code: RPCError.Code(wireCode: code), message: message)
    }

    /// The status a handler's error is answered with: an `RPCError` as it is, anything convertible to one as it
    /// says, and any other error as INTERNAL naming it (never UNKNOWN with no message).
    public init(answering error: any Error) {
        switch error {
        case let error as RPCError: self = error
        case let error as any RPCErrorConvertible: self.init(error)
        case is CancellationError: self.init(code: .cancelled, message: "the call was cancelled")
        default: self.init(code: .internalError, message: "\(error)")
        }
    }
}

extension RPCError.Code {
    /// The code gRPC numbers `code` (UNKNOWN for a number gRPC does not define, or for OK).
    init(wireCode code: Int32) {
        self = Status.Code(rawValue: Int(code)).flatMap { RPCError.Code($0) } ?? .unknown
    }
}

/// Objects of the bridge alive now (servers, server calls, channels, client calls): tests count them before and
/// after to find leaks.
public struct DataPlaneLiveObjects: Sendable, Equatable, CustomStringConvertible {
    public var servers: Int
    public var serverCalls: Int
    public var channels: Int
    public var clientCalls: Int

    public static var now: DataPlaneLiveObjects {
        let objects = mm_bridge_live_objects()
        return DataPlaneLiveObjects(
            servers: Int(objects.servers), serverCalls: Int(objects.server_calls), channels: Int(objects.channels),
            clientCalls: Int(objects.client_calls))
    }

    public var description: String {
        "servers \(self.servers), server calls \(self.serverCalls), channels \(self.channels), "
            + "client calls \(self.clientCalls)"
    }
}

/// A pointer to an object of the C++ core, whose functions may be called from any thread.
struct CorePointer: @unchecked Sendable {
    let pointer: OpaquePointer
}
