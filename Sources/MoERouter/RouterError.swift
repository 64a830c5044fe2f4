import GRPCCore
import MoECore
import MoERuntime
import MoEServing
import MoEWire

/// Why a router refused or failed a call; each case maps to one gRPC status code.
public enum RouterError: Error, Sendable, Equatable, RPCErrorConvertible {
    /// The hidden states were malformed (dtype, shape, data length, hidden size, empty, non-finite).
    case invalidInput(InputError)
    /// The batch cannot be routed under the configured policy (token ids missing, expert choice on decode).
    case routing(RoutingError)
    /// The layer asked for is not an MoE layer of the model.
    case unknownLayer(String, known: [String])
    /// The router is starting (waiting for its experts).
    case notReady(String)
    /// No replica of the expert is known.
    case noReplica(ExpertAddress)
    /// The expert had no replica and the coordinator could not start one in time.
    case coldStartFailed(ExpertAddress, reason: String)
    /// The expert's service could not be reached or gave up (`UNAVAILABLE`, deadline).
    case expertUnavailable(ExpertAddress, endpoint: ServiceEndpoint, reason: String)
    /// The expert's service answered with an error or a malformed block: a fault inside the mesh.
    case expertFailed(ExpertAddress, endpoint: ServiceEndpoint, reason: String)
    /// The expert refused the rows it was sent as invalid (e.g. its output overflowed for them): the caller's input.
    case expertRejectedInput(ExpertAddress, reason: String)
    /// The client's deadline passed before the expert answered (after `tried` replicas).
    case deadlineExceeded(ExpertAddress, tried: Int)
    /// The expert refused the call at once as too loaded to meet its deadline (`RESOURCE_EXHAUSTED`).
    case expertOverloaded(ExpertAddress, endpoint: ServiceEndpoint, reason: String)

    public var rpcErrorCode: RPCError.Code {
        switch self {
        case .invalidInput, .routing, .expertRejectedInput: .invalidArgument
        case .unknownLayer: .notFound
        case .notReady, .noReplica, .coldStartFailed, .expertUnavailable: .unavailable
        case .expertFailed: .internalError
        case .deadlineExceeded: .deadlineExceeded
        case .expertOverloaded: .resourceExhausted
        }
    }

    public var rpcErrorMessage: String {
        switch self {
        case .invalidInput(let error): error.description
        case .routing(let error): error.description
        case .unknownLayer(let layer, let known):
            "layer '\(layer)' is not an MoE layer of this model; MoE layers: \(known.joined(separator: ", "))"
        case .notReady(let reason): "the router is not ready yet: \(reason)"
        case .noReplica(let address): "no replica of \(address) is known to this router"
        case .coldStartFailed(let address, let reason): "\(address) has no replica and could not be started: \(reason)"
        case .expertUnavailable(let address, let endpoint, let reason):
            "\(address) at \(endpoint) is unavailable: \(reason)"
        case .expertFailed(let address, let endpoint, let reason):
            "\(address) at \(endpoint) failed: \(reason)"
        case .expertRejectedInput(let address, let reason): "hidden_states refused by \(address): \(reason)"
        case .deadlineExceeded(let address, let tried):
            "the call's deadline passed before \(address) answered (\(tried) replicas tried)"
        case .expertOverloaded(let address, let endpoint, let reason): "\(address) at \(endpoint) refused: \(reason)"
        }
    }
}

/// Why a router could not start.
public enum RouterStartupError: Error, Sendable, Equatable, CustomStringConvertible {
    case noExpertEndpoints
    /// The routing options do not fit the model.
    case routing(String)
    case expertsNotAnswering([ServiceEndpoint], after: Duration)
    case modelMismatch(ServiceEndpoint, reason: String)
    case uncoveredExperts([ExpertAddress], endpoints: [ServiceEndpoint])
    case uncoveredByCoordinator([ExpertAddress], coordinator: ServiceEndpoint, after: Duration)

    public var description: String {
        switch self {
        case .noExpertEndpoints:
            "no expert endpoints: give at least one --expert HOST:PORT, or --coordinator HOST:PORT"
        case .routing(let problem): "--routing: \(problem)"
        case .expertsNotAnswering(let endpoints, let after):
            "expert services did not answer within \(after): \(endpoints.map(\.description).joined(separator: ", "))"
        case .modelMismatch(let endpoint, let reason):
            "expert service at \(endpoint) serves a different model: \(reason)"
        case .uncoveredByCoordinator(let missing, let coordinator, let after):
            "after \(after), the coordinator at \(coordinator) still has no replica of \(missing.count) experts and cannot "
                + "start them; first: \(missing.prefix(5).map(\.description).joined(separator: "; "))"
        case .uncoveredExperts(let missing, let endpoints):
            "\(missing.count) experts are hosted by none of \(endpoints.map(\.description).joined(separator: ", ")); "
                + "first: \(missing.prefix(5).map(\.description).joined(separator: "; "))"
        }
    }
}

extension RouterError: ExpertUnreachableError {
    public var unreachableExpert: ExpertAddress? {
        switch self {
        case .noReplica(let address), .coldStartFailed(let address, _), .expertUnavailable(let address, _, _): address
        default: nil
        }
    }
}
