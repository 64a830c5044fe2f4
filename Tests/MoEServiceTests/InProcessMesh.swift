import GRPCCore
import GRPCInProcessTransport
import MoECore
import MoEExpert
import MoEModel
import MoEProto
import MoERouter
import MoERuntime
import MoEServing
import MoETestSupport

/// An expert service hosting every expert of a model and a router in front of it, wired over in-process
/// transports; `body` gets clients of both.
func withInProcessMesh(
    model: SmallModel, routing: RoutingConfiguration = RoutingConfiguration(),
    batching: ForwardBatcher.Configuration? = nil,
    _ body: (Moemesh_V1_Router.Client<InProcessTransport.Client>, Moemesh_V1_Expert.Client<InProcessTransport.Client>)
        async throws -> Void
) async throws {
    let checkpoint = try MoECheckpoint(path: model.path)
    let addresses = checkpoint.layers.flatMap(\.expertAddresses)
    let expertService = try ExpertService(checkpoint: checkpoint, experts: addresses)
    let expertTransport = InProcessTransport()
    try await withGRPCServer(transport: expertTransport.server, services: [expertService]) { _ in
        try await withGRPCClient(transport: expertTransport.client) { client in
            let expertClient = Moemesh_V1_Expert.Client(wrapping: client)
            let replica = ExpertReplica(endpoint: ServiceEndpoint(host: "in-process", port: 1), client: expertClient)
            let topology = ExpertTopology(replicas: Dictionary(uniqueKeysWithValues: addresses.map { ($0, [replica]) }))
            let router = RouterService(
                modelType: checkpoint.modelType, hiddenSize: checkpoint.hiddenSize,
                pipelines: try checkpoint.layers.map {
                    try MoELayerPipeline(checkpoint: checkpoint, layer: $0, policy: routing.policy(for: $0))
                },
                executor: RemoteExpertExecutor(
                    topology: topology, wireDType: .f32, callOptions: ServingConfiguration().callOptions()),
                routingSummary: routing.summary, batching: batching)
            let routerTransport = InProcessTransport()
            try await withGRPCServer(transport: routerTransport.server, services: [router]) { _ in
                try await withGRPCClient(transport: routerTransport.client) { routerClient in
                    try await body(Moemesh_V1_Router.Client(wrapping: routerClient), expertClient)
                }
            }
        }
    }
}

extension Moemesh_V1_Tensor {
    /// A wire tensor with arbitrary (possibly inconsistent) fields, for bad-input tests.
    static func raw(_ dtype: Moemesh_V1_DType, _ shape: [Int], bytes: Int) -> Self {
        var tensor = Self()
        tensor.dtype = dtype
        tensor.shape = shape.map(Int64.init)
        tensor.data = .init(repeating: 0, count: bytes)
        return tensor
    }

    /// f32 rows with one value replaced.
    static func rows(_ matrix: Matrix, replacing index: Int? = nil, with value: Float = .nan) -> Self {
        var values = matrix
        if let index { values.values[index] = value }
        return Self(values, dtype: .f32)
    }
}
