import CoreMetrics
import GRPCCore
import Logging
import MoECore
import MoEModel
import MoEProto
import MoERuntime
import MoEServing
import MoEWire

/// The public API: `Forward` runs one MoE layer (gate → dispatch → experts over gRPC → combine).
public struct RouterService: Sendable {
    public let modelType: String
    public let hiddenSize: Int
    /// Layer name → pipeline, and the layer names in model order.
    public let pipelines: [String: MoELayerPipeline]
    public let layerNames: [String]
    public let executor: any ExpertExecutor
    /// Balance telemetry of every request served.
    public let balance: BalanceLedger
    /// The routing policy's description, for `DescribeModel`.
    public let routingSummary: String
    /// Dynamic batching of concurrent calls, when enabled.
    public let batcher: ForwardBatcher?
    /// Experts of a layer pruned from routing (by the coordinator's admin), masked in the gate.
    public let prunedExperts: @Sendable (String) -> Set<Int>
    /// Until ready, `Forward` answers `UNAVAILABLE` with the reason.
    public let readiness: Readiness
    /// Prometheus series (see `ServiceMetrics`).
    public let metrics: ServiceMetrics
    /// Each layer's series, made once.
    let layerMetrics: [String: RouterLayerMetrics]
    /// With `--prefetch-next-layer`: sends `Prefetch` hints for experts (see `prefetchNextLayer`).
    public let prefetch: PrefetchHook?
    /// Hidden states above it are refused with RESOURCE_EXHAUSTED; nil: only the transport's limit.
    let payloadLimit: PayloadLimit?
    /// Counts which experts are chosen together, for the coordinator (nil: no coordinator).
    public let coactivation: CoactivationMeter?
    /// Expert → precision → live replicas storing it so (for `DescribeModel`).
    public let expertPrecisions: @Sendable () -> [ExpertAddress: [String: Int]]
    /// Refuses at once what cannot meet its deadline, and bounds the request bytes in flight; nil: admits all.
    public let loadShedder: LoadShedder?
    /// Each layer's gate probe, answered in `DescribeModel` so clients can tell which model this is, and compared
    /// with what `--expert` services report.
    public let gateProbes: GateProbes

    public init(
        modelType: String, hiddenSize: Int, pipelines: [MoELayerPipeline], executor: any ExpertExecutor,
        routingSummary: String = "model", batching: ForwardBatcher.Configuration? = nil,
        prunedExperts: @escaping @Sendable (String) -> Set<Int> = { _ in [] }, readiness: Readiness = .ready,
        metrics: ServiceMetrics = ServiceMetrics(), prefetch: PrefetchHook? = nil,
        payloadLimit: PayloadLimit? = nil, coactivation: CoactivationMeter? = nil,
        expertPrecisions: @escaping @Sendable () -> [ExpertAddress: [String: Int]] = { [:] },
        loadShedder: LoadShedder? = nil
    ) {
        self.loadShedder = loadShedder
        self.expertPrecisions = expertPrecisions
        self.coactivation = coactivation
        self.payloadLimit = payloadLimit
        self.prefetch = prefetch
        self.modelType = modelType
        self.hiddenSize = hiddenSize
        self.pipelines = Dictionary(uniqueKeysWithValues: pipelines.map { ($0.spec.name, $0) })
        self.layerNames = pipelines.map(\.spec.name)
        self.gateProbes = GateProbes(layers: pipelines.map { ($0.spec.name, GateProbes.probe($0.router.weight)) })
        self.executor = executor
        self.balance = BalanceLedger()
        self.routingSummary = routingSummary
        self.batcher = batching.map(ForwardBatcher.init(configuration:))
        self.prunedExperts = prunedExperts
        self.readiness = readiness
        self.metrics = metrics
        self.layerMetrics = Dictionary(
            uniqueKeysWithValues: pipelines.map {
                ($0.spec.name, RouterLayerMetrics(metrics: metrics, layer: $0.spec.name, experts: $0.spec.numExperts))
            })
    }

    /// Validates the request, runs the layer and encodes the answer in the request's dtype and shape; refused at
    /// once (`RESOURCE_EXHAUSTED`) when the router is too loaded to answer it within its deadline.
    public func forward(_ request: Moemesh_V1_ForwardRequest) async throws -> Moemesh_V1_ForwardResponse {
        guard let shedder = self.loadShedder else { return try await self.admittedForward(request) }
        return try await shedder.run(bytes: request.hiddenStates.data.count) { try await self.admittedForward(request) }
    }

    private func admittedForward(_ request: Moemesh_V1_ForwardRequest) async throws -> Moemesh_V1_ForwardResponse {
        if let reason = self.readiness.notReadyReason { throw RouterError.notReady(reason) }
        guard let layerPipeline = self.pipelines[request.layer] else {
            throw RouterError.unknownLayer(request.layer, known: self.layerNames)
        }
        let pipeline = layerPipeline.masking(self.prunedExperts(request.layer))
        try self.payloadLimit?.check(request.hiddenStates, field: "hidden_states")
        let (hidden, routingRequest): (DecodedRows, RoutingRequest)
        do { (hidden, routingRequest) = try request.decodeInput(hiddenSize: self.hiddenSize) } catch {
            throw RouterError.invalidInput(error)
        }
        let started = ContinuousClock.now
        if let prefetch = self.prefetch {
            self.prefetchNextLayer(after: request.layer, hidden: hidden, routing: routingRequest, prefetch)
        }
        let result: MoELayerResult
        do {
            if let batcher = self.batcher, MoELayerResult.isTokenwise(pipeline.policy) {
                result = try await batcher.forward(hidden.matrix, pipeline: pipeline, executor: self.executor)
            } else {
                result = try await pipeline.forward(hidden.matrix, request: routingRequest, executor: self.executor)
            }
        } catch let error as RoutingError {
            throw RouterError.routing(error)
        }
        // Every expert's rows were finite, yet their weighted sum can still overflow.
        if result.output.values.contains(where: { !$0.isFinite }) {
            throw RouterError.invalidInput(
                .outputOverflow(
                    field: "hidden_states", what: "the output of layer \(request.layer)",
                    largestInput: InputError.largestMagnitude(hidden.matrix.values)))
        }
        self.balance.record(layer: request.layer, result.balance)
        self.coactivation?.record(layer: request.layer, result.routing)
        self.record(result, layer: request.layer, since: started)

        var response = Moemesh_V1_ForwardResponse()
        response.output = Moemesh_V1_Tensor(result.output, shape: hidden.shape, dtype: hidden.dtype)
        if request.returnRouting {
            response.routing.topK = Int32(result.routing.topK)
            response.routing.topkIds = result.routing.topkIDs
            response.routing.topkWeights = result.routing.topkWeights
            response.routing.residualWeights = result.routing.residualWeights ?? []
        }
        if request.returnBalance { response.balance = Moemesh_V1_BalanceStats(result.balance, layer: request.layer) }
        response.reroutedExperts = result.reroutedExperts.map(Int32.init)
        return response
    }
}

extension RouterService {
    /// The experts the next MoE layer will likely need for these tokens, hinted to their replicas while this layer
    /// runs: the next layer's gate applied to this layer's input (the residual stream changes little from one layer
    /// to the next), top-k per token, plus its shared expert. Under a GPU memory budget the experts load ahead.
    func prefetchNextLayer(
        after layer: String, hidden: DecodedRows, routing: RoutingRequest,
        _ prefetch: PrefetchHook
    ) {
        guard let index = self.layerNames.firstIndex(of: layer), index + 1 < self.layerNames.count else { return }
        let next = self.layerNames[index + 1]
        guard let pipeline = self.pipelines[next]?.masking(self.prunedExperts(next)),
            let decision = try? pipeline.route(hidden.matrix, request: routing)
        else { return }
        let routed = Set(decision.topkIDs.filter { $0 >= 0 }.map(Int.init)).sorted()
        let shared = pipeline.spec.sharedExpert == nil ? [] : [ExpertAddress(layer: next, expert: ExpertAddress.shared)]
        prefetch(routed.map { ExpertAddress(layer: next, expert: $0) } + shared)
    }

    /// Per layer: requests, tokens, latency, dropped slots, rerouted experts, balancedness; per expert: tokens routed.
    func record(_ result: MoELayerResult, layer: String, since started: ContinuousClock.Instant) {
        guard let series = self.layerMetrics[layer] else { return }
        series.requests.increment()
        series.tokens.increment(by: result.output.rows)
        series.requestTime.record(duration: ContinuousClock.now - started)
        series.droppedSlots.increment(by: result.balance.droppedSlots)
        series.rerouted.increment(by: result.reroutedExperts.count)
        series.balancedness.record(result.balance.balancedness)
        for (expert, tokens) in result.balance.tokensPerExpert.enumerated()
        where tokens > 0 && expert < series.expertRows.count {
            series.expertRows[expert].increment(by: tokens)
        }
    }
}

/// One layer's series at the router, made once when the router starts (a request only increments them).
struct RouterLayerMetrics: Sendable {
    let requests: Counter
    let tokens: Counter
    let requestTime: CoreMetrics.Timer
    let droppedSlots: Counter
    let rerouted: Counter
    let balancedness: Gauge
    /// Tokens routed to each expert of the layer, by index.
    let expertRows: [Counter]

    init(metrics: ServiceMetrics, layer: String, experts: Int) {
        let labels = [("layer", layer)]
        self.requests = metrics.counter("moemesh_router_requests_total", labels)
        self.tokens = metrics.counter("moemesh_router_tokens_total", labels)
        self.requestTime = metrics.timer("moemesh_router_request_seconds", labels)
        self.droppedSlots = metrics.counter("moemesh_router_dropped_slots_total", labels)
        self.rerouted = metrics.counter("moemesh_router_rerouted_total", labels)
        self.balancedness = metrics.gauge("moemesh_router_balancedness", labels)
        self.expertRows = (0..<experts).map {
            metrics.counter("moemesh_router_expert_rows_total", ExpertAddress(layer: layer, expert: $0).metricLabels)
        }
    }
}

extension RouterService {
    /// The model served: type, hidden size, MoE layers, routing, and the precisions the replicas hold.
    public func describe() -> Moemesh_V1_DescribeModelResponse {
        var response = Moemesh_V1_DescribeModelResponse()
        response.modelType = self.modelType
        response.hiddenSize = Int32(self.hiddenSize)
        let probes = Dictionary(self.gateProbes.layers.map { ($0.name, $0.values) }) { first, _ in first }
        response.layers = self.layerNames.compactMap { name in
            guard let spec = self.pipelines[name]?.spec else { return nil }
            var layer = Moemesh_V1_MoELayer()
            layer.name = name
            layer.numExperts = Int32(spec.numExperts)
            layer.topK = Int32(spec.topK)
            layer.sharedExpert = spec.sharedExpert != nil
            layer.gateProbe = probes[name] ?? []
            return layer
        }
        response.routing = self.routingSummary
        response.expertPrecisions = self.expertPrecisions().sorted { $0.key < $1.key }.flatMap { address, counts in
            counts.sorted { $0.key < $1.key }.map { precision, replicas in
                Moemesh_V1_ExpertPrecisionReplicas.with {
                    $0.layer = address.layer
                    $0.expert = Int32(address.expert)
                    $0.precision = precision
                    $0.replicas = Int32(replicas)
                }
            }
        }
        return response
    }

    /// Routing balance per layer since the last reset (of one layer, or of all).
    public func balance(_ request: Moemesh_V1_GetBalanceRequest) throws(RouterError) -> Moemesh_V1_GetBalanceResponse {
        if !request.layer.isEmpty && self.pipelines[request.layer] == nil {
            throw RouterError.unknownLayer(request.layer, known: self.layerNames)
        }
        let snapshot = self.balance.snapshot(
            reset: request.reset, layers: request.layer.isEmpty ? nil : [request.layer])
        var response = Moemesh_V1_GetBalanceResponse()
        response.layers = self.layerNames.filter { request.layer.isEmpty || $0 == request.layer }.compactMap { name in
            snapshot[name].map { Moemesh_V1_BalanceStats($0, layer: name) }
        }
        return response
    }
}

extension Moemesh_V1_BalanceStats {
    public init(_ stats: BalanceStats, layer: String) {
        self.init()
        self.layer = layer
        self.tokens = Int64(stats.tokens)
        self.tokensPerExpert = stats.tokensPerExpert.map(Int64.init)
        self.routedFraction = stats.routedFractions
        self.meanProbability = stats.meanProbabilities
        self.auxLoss = stats.auxLoss
        self.zLoss = stats.zLoss
        self.balancedness = stats.balancedness
        self.droppedSlots = Int64(stats.droppedSlots)
        self.deadExperts = stats.deadExperts.map(Int32.init)
    }
}
