import GRPCCore
import MoECore

/// Why the coordinator refused a call; each case maps to one gRPC status code.
public enum CoordinatorError: Error, Sendable, Equatable, RPCErrorConvertible {
    /// A request that does not fit the model (model type, hidden size, experts, empty fields).
    case invalidRequest(String)
    case unknownExpert(ExpertAddress)
    case unknownReplica(String)
    /// Experts no replica hosts and no scaler can start.
    case cannotStart([ExpertAddress], reason: String)
    /// Pruning would leave a layer with fewer experts than it routes each token to.
    case tooFewExperts(layer: String, remaining: Int, topK: Int)

    public var rpcErrorCode: RPCError.Code {
        switch self {
        case .invalidRequest: .invalidArgument
        case .unknownExpert, .unknownReplica: .notFound
        case .cannotStart, .tooFewExperts: .failedPrecondition
        }
    }

    public var rpcErrorMessage: String {
        switch self {
        case .invalidRequest(let reason): reason
        case .unknownExpert(let address): "\(address) is not an expert of the served model"
        case .unknownReplica(let id): "no replica '\(id)' is registered"
        case .cannotStart(let addresses, let reason):
            "cannot start \(addresses.map(\.description).joined(separator: ", ")): \(reason)"
        case .tooFewExperts(let layer, let remaining, let topK):
            "pruning would leave layer \(layer) with \(remaining) experts, fewer than the \(topK) each token is routed to"
        }
    }
}
