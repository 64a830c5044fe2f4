import GRPCCore
import MoECore
import MoEServing
import MoEWire

/// Why an expert service refused a call; each case maps to one gRPC status code.
public enum ExpertError: Error, Sendable, Equatable, RPCErrorConvertible {
    /// The rows sent were malformed (dtype, shape, data length, hidden size, empty, non-finite).
    case invalidInput(InputError)
    /// The (layer, expert) asked for is not hosted by this service.
    case unknownExpert(ExpertAddress, hosted: String)
    /// The expert's weights could not be read from the checkpoint (when paging it in under a memory budget).
    case loadFailed(ExpertAddress, reason: String)
    /// The device failed while running the expert (a GPU out of memory, a failed launch).
    case computeFailed(ExpertAddress, reason: String)
    /// The caller left (cancelled, or its deadline passed) before the expert ran: it was not computed.
    case cancelled(ExpertAddress)
    /// The rows were above the service's `--max-message-mib`.
    case tooLarge(PayloadTooLarge)
    /// A call of several experts whose `experts` and `row_counts` do not split its rows.
    case invalidParts(String)
    /// The calls waiting for the device would make this one miss its deadline, or hold too many bytes.
    case overloaded(Overloaded)

    public var rpcErrorCode: RPCError.Code {
        switch self {
        case .invalidInput, .invalidParts: .invalidArgument
        case .unknownExpert: .notFound
        case .loadFailed, .computeFailed: .internalError
        case .cancelled: .cancelled
        case .tooLarge(let error): error.rpcErrorCode
        case .overloaded(let error): error.rpcErrorCode
        }
    }

    public var rpcErrorMessage: String {
        switch self {
        case .invalidInput(let error): error.description
        case .unknownExpert(let address, let hosted):
            "\(address) is not hosted by this expert service; it hosts \(hosted)"
        case .loadFailed(let address, let reason): "\(address) could not be loaded: \(reason)"
        case .computeFailed(let address, let reason): "\(address) failed on the device: \(reason)"
        case .cancelled(let address): "the call to \(address) was cancelled by its caller before it ran"
        case .tooLarge(let error): error.rpcErrorMessage
        case .invalidParts(let reason): reason
        case .overloaded(let error): error.rpcErrorMessage
        }
    }
}
