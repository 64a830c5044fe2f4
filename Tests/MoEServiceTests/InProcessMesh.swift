import GRPCCore
import GRPCInProcessTransport
import Logging
import MoECore
import MoEExpert
import MoEModel
import MoEProto
import MoERouter
import MoERuntime
import MoEServing
import MoETestSupport
import MoEWire
import Tracing

/// An expert service hosting every expert of a model and a router in front of it, wired over in-process
/// transports; `body` gets clients of both.
/// Both servers count calls and errors (`RPCMetricsInterceptor`) and trace them with `tracer`.
func withInProcessMesh(
    model: SmallModel, routing: RoutingConfiguration = RoutingConfiguration(),
    batching: ForwardBatcher.Configuration? = nil, tracer: any Tracer = NoOpTracer(),
    expertMemoryBudgetBytes: Int? = nil, precisions: PrecisionPlan = .deviceDefault,
    _ body: (Moemesh_V1_Router.Client<InProcessTransport.Client>, Moemesh_V1_Expert.Client<InProcessTransport.Client>)
        async throws -> Void
) async throws {
    let checkpoint = try MoECheckpoint(path: model.path)
    let addresses = checkpoint.layers.flatMap(\.expertAddresses)
    let expertService = try ExpertService(
        checkpoint: checkpoint, experts: addresses, precisions: precisions, memoryBudgetBytes: expertMemoryBudgetBytes)
    let expertTransport = InProcessTransport()
    let logger = Logger(label: "in-process-mesh")
    let expertInterceptors: [any ServerInterceptor] = [
        RPCMetricsInterceptor(metrics: expertService.metrics, service: "expert"),
        TracingServerInterceptor(tracer: tracer, logger: logger),
    ]
    try await withGRPCServer(
        transport: expertTransport.server, services: [expertService], interceptors: expertInterceptors
    ) { _ in
        try await withGRPCClient(transport: expertTransport.client) { client in
            let expertClient = Moemesh_V1_Expert.Client(wrapping: client)
            let replica = ExpertReplica(endpoint: ServiceEndpoint(host: "in-process", port: 1), client: expertClient)
            let topology = ExpertTopology(replicas: Dictionary(uniqueKeysWithValues: addresses.map { ($0, [replica]) }))
            // As a router's startup does: the precisions the expert service describes.
            let description = try await expertClient.describeExperts(Moemesh_V1_DescribeExpertsRequest())
            topology.setPrecisions(
                Dictionary(description.precisions.map { ($0.expert.address, [$0.precision: 1]) }) { $1 })
            let metrics = ServiceMetrics()
            let executor = RemoteExpertExecutor(
                topology: topology, wireDType: .f32, callOptions: ServingConfiguration().callOptions(),
                metrics: metrics,
                tracer: tracer)
            var prefetch: (@Sendable ([ExpertAddress]) -> Void)? = nil
            if routing.prefetchNextLayer { prefetch = { addresses in executor.prefetch(addresses) } }
            let router = RouterService(
                modelType: checkpoint.modelType, hiddenSize: checkpoint.hiddenSize,
                pipelines: try checkpoint.layers.map {
                    try MoELayerPipeline(checkpoint: checkpoint, layer: $0, policy: routing.policy(for: $0))
                },
                executor: executor, routingSummary: routing.summary, batching: batching, metrics: metrics,
                prefetch: prefetch, expertPrecisions: { topology.precisions })
            let routerTransport = InProcessTransport()
            let routerInterceptors: [any ServerInterceptor] = [
                RPCMetricsInterceptor(metrics: metrics, service: "router"),
                TracingServerInterceptor(tracer: tracer, logger: logger),
            ]
            try await withGRPCServer(
                transport: routerTransport.server, services: [router], interceptors: routerInterceptors
            ) { _ in
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
