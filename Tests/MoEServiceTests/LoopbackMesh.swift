import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import MoECore
import MoEDataPlane
import MoEExpert
import MoEModel
import MoEProto
import MoERouter
import MoERuntime
import MoEServing
import MoETestSupport
import MoEWire
import Tracing

/// Serves `methods` on a data-plane server (gRPC's C++ core, as routers and experts serve) on 127.0.0.1, any free
/// port, while `body` runs; then stops it.
func withDataPlaneServer<Result: Sendable>(
    _ methods: [String: DataPlaneMethod], _ body: (ServiceEndpoint) async throws -> Result
) async throws -> Result {
    let server = try DataPlaneServer(
        configuration: try ServingConfiguration().dataPlaneServerConfiguration(), methods: methods)
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { await server.run() }
        do {
            let result = try await body(ServiceEndpoint(host: "127.0.0.1", port: server.port))
            await server.shutdown(grace: .zero)
            try await group.waitForAll()
            return result
        } catch {
            await server.shutdown(grace: .zero)
            try? await group.waitForAll()
            throw error
        }
    }
}

/// Each of `methods` on a data-plane server of its own; `body` gets their endpoints, in order.
func withDataPlaneServers(
    _ methods: [[String: DataPlaneMethod]], endpoints: [ServiceEndpoint] = [],
    _ body: ([ServiceEndpoint]) async throws -> Void
) async throws {
    guard endpoints.count < methods.count else { return try await body(endpoints) }
    try await withDataPlaneServer(methods[endpoints.count]) { endpoint in
        try await withDataPlaneServers(methods, endpoints: endpoints + [endpoint], body)
    }
}

/// A gRPC client (grpc-swift, over HTTP/2 on loopback) of the server at `endpoint`, as any client of the mesh is.
func withClient<Result: Sendable>(
    of endpoint: ServiceEndpoint, _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Result
) async throws -> Result {
    try await withGRPCClient(
        transport: try ServingConfiguration().makeClientTransport(to: endpoint), handleClient: body)
}

extension ExpertService {
    /// Its data-plane methods, served as an expert process serves them (spans through `tracer`).
    func dataPlaneMethods(tracer: any Tracer = NoOpTracer()) -> [String: DataPlaneMethod] {
        self.dataPlaneMethods(
            calls: DataPlaneCalls(
                metrics: self.metrics, service: "expert", tracer: tracer, logger: Logger(label: "moemesh.test.expert")))
    }
}

extension RouterService {
    /// Its data-plane methods, served as a router process serves them (spans through `tracer`).
    func dataPlaneMethods(tracer: any Tracer = NoOpTracer()) -> [String: DataPlaneMethod] {
        self.dataPlaneMethods(
            calls: DataPlaneCalls(
                metrics: self.metrics, service: "router", tracer: tracer, logger: Logger(label: "moemesh.test.router")))
    }
}

/// The router's connections to `endpoints` (over TCP, a `ComputeStream` each with `streams`), as its replicas, in
/// order; closed after `body`.
func withExpertReplicas<Result: Sendable>(
    _ endpoints: [ServiceEndpoint], streams: Bool = true, _ body: ([ExpertReplica]) async throws -> Result
) async throws -> Result {
    let connections = try ExpertConnections(serving: ServingConfiguration(), streams: streams, unixSockets: false)
    defer { connections.close() }
    return try await body(try endpoints.map { try connections.replica(at: $0) })
}

/// An expert service hosting every expert of a model and a router in front of it, each on a data-plane server on
/// loopback as in a mesh (the router calling the expert over a `ComputeStream`); `body` gets gRPC clients of both.
/// Both count calls and errors and trace them with `tracer`, as the processes do.
func withLoopbackMesh(
    model: SmallModel, routing: RoutingConfiguration = RoutingConfiguration(),
    batching: ForwardBatcher.Configuration? = nil, tracer: any Tracer = NoOpTracer(),
    expertMemoryBudgetBytes: Int? = nil, precisions: PrecisionPlan = .deviceDefault,
    _ body: (
        Moemesh_V1_Router.Client<HTTP2ClientTransport.Posix>, Moemesh_V1_Expert.Client<HTTP2ClientTransport.Posix>
    ) async throws -> Void
) async throws {
    let checkpoint = try MoECheckpoint(path: model.path)
    let addresses = checkpoint.layers.flatMap(\.expertAddresses)
    let expertService = try ExpertService(
        checkpoint: checkpoint, experts: addresses, precisions: precisions, memoryBudgetBytes: expertMemoryBudgetBytes)
    try await withDataPlaneServer(expertService.dataPlaneMethods(tracer: tracer)) { expertEndpoint in
        try await withClient(of: expertEndpoint) { client in
            let expertClient = Moemesh_V1_Expert.Client(wrapping: client)
            try await withExpertReplicas([expertEndpoint]) { replicas in
                let topology = ExpertTopology(
                    replicas: Dictionary(uniqueKeysWithValues: addresses.map { ($0, replicas) }))
                // As a router's startup does: the precisions the expert service describes.
                let description = try await expertClient.describeExperts(Moemesh_V1_DescribeExpertsRequest())
                topology.setPrecisions(
                    Dictionary(description.precisions.map { ($0.expert.address, [$0.precision: 1]) }) { $1 })
                let metrics = ServiceMetrics()
                let executor = RemoteExpertExecutor(
                    topology: topology, wireDType: .f32,
                    metrics: metrics, tracer: tracer)
                let hints = PrefetchHints(metrics: metrics)
                let prefetch = executor.prefetchHook(routing, hints: hints)
                let router = RouterService(
                    modelType: checkpoint.modelType, hiddenSize: checkpoint.hiddenSize,
                    pipelines: try checkpoint.layers.map {
                        try MoELayerPipeline(checkpoint: checkpoint, layer: $0, policy: routing.policy(for: $0))
                    },
                    executor: executor, routingSummary: routing.summary, batching: batching, metrics: metrics,
                    prefetch: prefetch, expertPrecisions: { topology.precisions })
                // As in a router's service group: the hints run beside the server and end with it.
                try await withThrowingDiscardingTaskGroup { group in
                    group.addTask { await hints.run() }
                    if let batcher = router.batcher { group.addTask { await batcher.run() } }
                    defer { group.cancelAll() }
                    try await withDataPlaneServer(router.dataPlaneMethods(tracer: tracer)) { routerEndpoint in
                        try await withClient(of: routerEndpoint) { routerClient in
                            try await body(Moemesh_V1_Router.Client(wrapping: routerClient), expertClient)
                        }
                    }
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

/// Runs `body` while `batcher` (if any) runs its batches of several calls, as a router's service group does.
func withBatcher<Result>(_ batcher: ForwardBatcher?, _ body: () async throws -> Result) async throws -> Result {
    guard let batcher else { return try await body() }
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { await batcher.run() }
        defer { group.cancelAll() }
        return try await body()
    }
}
