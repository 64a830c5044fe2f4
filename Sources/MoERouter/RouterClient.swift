import GRPCCore
import GRPCNIOTransportHTTP2
import MoECore
import MoEProto
import MoEServing
import MoEWire

/// A client of the public router API, for tools and tests.
public struct RouterClient: Sendable {
    /// The answer of `forward`.
    public struct ForwardResult: Sendable {
        /// Same shape and dtype as the input.
        public let output: Tensor
        /// The routing decision (top-k ids and weights per token).
        public let routing: RoutingDecision?
        /// This request's balance telemetry, when asked for.
        public let balance: Moemesh_V1_BalanceStats?
    }

    public let client: Moemesh_V1_Router.Client<HTTP2ClientTransport.Posix>
    public let serving: ServingConfiguration

    public init(client: GRPCClient<HTTP2ClientTransport.Posix>, serving: ServingConfiguration = ServingConfiguration())
    {
        self.client = Moemesh_V1_Router.Client(wrapping: client)
        self.serving = serving
    }

    /// Runs `withGRPCClient` against `endpoint` and hands a router client to `body`.
    public static func with<Result: Sendable>(
        endpoint: ServiceEndpoint, serving: ServingConfiguration = ServingConfiguration(),
        _ body: (RouterClient) async throws -> Result
    ) async throws -> Result {
        try await serving.withClient(to: endpoint) { client in
            try await body(RouterClient(client: client, serving: serving))
        }
    }

    public func describeModel() async throws -> Moemesh_V1_DescribeModelResponse {
        try await self.client.describeModel(Moemesh_V1_DescribeModelRequest(), options: self.serving.callOptions())
    }

    /// Runs `layer` on `hiddenStates` (`[T, H]` or `[B, S, H]`).
    public func forward(
        layer: String, hiddenStates: Tensor, returnRouting: Bool = true, tokenIDs: [Int64] = [],
        returnBalance: Bool = false, timeout: Duration? = nil
    ) async throws -> ForwardResult {
        var request = Moemesh_V1_ForwardRequest()
        request.layer = layer
        request.returnRouting = returnRouting
        request.tokenIds = tokenIDs
        request.returnBalance = returnBalance
        request.hiddenStates.dtype = Moemesh_V1_DType(hiddenStates.dtype)
        request.hiddenStates.shape = hiddenStates.shape.map(Int64.init)
        request.hiddenStates.data = .init(hiddenStates.bytes())
        let response = try await self.client.forward(request, options: self.serving.callOptions(timeout: timeout))
        guard let dtype = response.output.dtype.coreDType else {
            throw RPCError(code: .internalError, message: "router answered an output without a known dtype")
        }
        let output = try response.output.data.withUnsafeBytes {
            try Tensor(dtype: dtype, shape: response.output.shape.map(Int.init), bytes: $0)
        }
        var routing: RoutingDecision? = nil
        if response.hasRouting {
            let k = Int(response.routing.topK)
            let tokens = k == 0 ? 0 : response.routing.topkIds.count / k
            routing = RoutingDecision(
                tokenCount: tokens, topK: k, numExperts: Int(response.routing.topkIds.max() ?? 0) + 1,
                topkIDs: response.routing.topkIds, topkWeights: response.routing.topkWeights,
                residualWeights: response.routing.residualWeights.isEmpty ? nil : response.routing.residualWeights)
        }
        return ForwardResult(output: output, routing: routing, balance: response.hasBalance ? response.balance : nil)
    }
}
