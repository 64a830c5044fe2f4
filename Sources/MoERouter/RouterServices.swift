import GRPCCore
import MoEDataPlane
import Logging
import MoECore
import MoEModel
import MoEProto
import MoERuntime
import MoEServing
import MoEWire
import ServiceLifecycle

/// Builds a router from its configuration: loads every MoE layer's gate and returns the services to run in a
/// `ServiceGroup`, in order: the expert connections, the coordinator link (with a coordinator), the server, then the
/// startup that makes it ready. The server answers at once (health NOT_SERVING, Forward UNAVAILABLE); it turns
/// ready once every expert is served (or, under a coordinator, startable), and `onReady` is called with its address
/// (by default: the ready line `router listening on HOST:PORT`).
///
/// A group shuts its services down last first: the startup, then the server (in-flight calls finish), then the
/// coordinator link and the expert connections those calls needed.
public func buildRouterServices(
    configuration: RouterConfiguration, logger: Logger,
    onReady: @escaping @Sendable (ServiceEndpoint) -> Void = { ReadyLine.print(role: "router", endpoint: $0) }
) throws -> [any Service] {
    if configuration.coordinator == nil && configuration.expertEndpoints.isEmpty {
        throw RouterStartupError.noExpertEndpoints
    }
    let checkpoint = try MoECheckpoint(path: configuration.modelPath)
    if let problem = configuration.routing.problem(for: checkpoint.layers) { throw RouterStartupError.routing(problem) }
    let pipelines = try checkpoint.layers.map { layer throws(ModelError) in
        try MoELayerPipeline(checkpoint: checkpoint, layer: layer, policy: configuration.routing.policy(for: layer))
    }
    let serving = configuration.serving
    let connections = try ExpertConnections(
        serving: serving, streams: configuration.expertStreams, unixSockets: configuration.unixSockets)
    let metrics = ServiceMetrics()
    let scheduler = ReplicaScheduler(configuration: configuration.replicas) { ejection in
        metrics.counter("moemesh_router_ejections_total", [("endpoint", ejection.endpoint.description)]).increment()
        logger.warning(
            "replica ejected from this router's choice",
            metadata: [
                "endpoint": "\(ejection.endpoint)", "reason": "\(ejection.reason)", "for": "\(ejection.duration)",
            ])
    }
    let topology = ExpertTopology(replicas: [:], onRemoved: { scheduler.replicasLeft($0) })
    let link = try configuration.coordinator.map { coordinator in
        try CoordinatorLink(
            coordinator: coordinator, routerID: configuration.routerID, topology: topology, connections: connections,
            scheduler: scheduler, serving: serving, logger: logger)
    }
    let expertTimeout = configuration.expertTimeout
    var coldStart: (@Sendable (ExpertAddress) async throws -> Void)? = nil
    if let link { coldStart = { address in try await link.coldStart(address, timeout: expertTimeout) } }
    let executor = RemoteExpertExecutor(
        topology: topology, scheduler: scheduler, wireDType: configuration.expertWireDType,
        expertTimeout: expertTimeout, demand: link?.demand,
        coldStart: coldStart, metrics: metrics)
    let readiness = Readiness(notReady: "waiting for expert replicas")
    let hints = PrefetchHints(metrics: metrics)
    let prefetch = executor.prefetchHook(configuration.routing, hints: hints)
    let service = RouterService(
        modelType: checkpoint.modelType, hiddenSize: checkpoint.hiddenSize, pipelines: pipelines, executor: executor,
        routingSummary: configuration.routing.summary, batching: configuration.batching,
        prunedExperts: { topology.pruned(layer: $0) }, readiness: readiness, metrics: metrics,
        prefetch: prefetch, payloadLimit: PayloadLimit(bytes: serving.maxMessageBytes),
        coactivation: link?.coactivation,
        expertPrecisions: { topology.precisions },
        loadShedder: LoadShedder(service: "router", configuration: serving.loadShedding))
    let health = HealthService(services: [Moemesh_V1_Router.descriptor.fullyQualifiedService])
    let calls = DataPlaneCalls(metrics: metrics, service: "router", logger: logger)
    let dataPlane = try DataPlaneServer(
        configuration: serving.dataPlaneServerConfiguration(),
        methods: service.dataPlaneMethods(calls: calls).merging(health.dataPlaneMethods) { first, _ in first }
            .merging(ServerReflection(services: health.services).dataPlaneMethods) { first, _ in first },
        admission: serving.dataPlaneAdmission)
    let listening = SetOnce<ServiceEndpoint>()
    listening.set(ServiceEndpoint(host: serving.host, port: dataPlane.port))
    let server = DataPlaneServerService(server: dataPlane, health: health, drainTimeout: serving.drainTimeout)
    let startup = RouterStartup(
        configuration: configuration, checkpoint: checkpoint, gateProbes: service.gateProbes,
        connections: connections, topology: topology, listening: listening, logger: logger
    ) { endpoint in
        readiness.setReady()
        health.setAll(.serving)
        onReady(endpoint)
        logger.info(
            "serving",
            metadata: [
                "address": "\(endpoint)", "layers": "\(pipelines.count)",
                "routing": "\(configuration.routing.summary)",
            ])
    }
    let reloader = serving.acceptedTokens.map { [AuthTokensReloader(tokens: $0, logger: logger)] } ?? []
    // Stopped last first: the server (its calls answered), then the batches and hints, then the links they use.
    let batcher: [any Service] = service.batcher.map { [$0] } ?? []
    return reloader + [connections] + (link.map { [$0] } ?? []) + [hints] + batcher + [server, startup]
}

extension ExpertConnections: Service {}
extension CoordinatorLink: Service {}

/// Makes a listening router ready: waits until every expert of the model is served — by the `--expert` services
/// (asked what they host) or in the coordinator's topology — then calls `onReady` and stays until shutdown.
struct RouterStartup: Service {
    let configuration: RouterConfiguration
    let checkpoint: MoECheckpoint
    /// The router's own (`RouterService.gateProbes`): an `--expert` service of another model is refused.
    let gateProbes: GateProbes
    let connections: ExpertConnections
    let topology: ExpertTopology
    let listening: SetOnce<ServiceEndpoint>
    let logger: Logger
    let onReady: @Sendable (ServiceEndpoint) -> Void

    func run() async throws {
        let ready: ServiceEndpoint?
        do {
            ready = try await cancelWhenGracefulShutdown {
                guard let endpoint = await self.listening.wait() else { return nil }
                if let coordinator = self.configuration.coordinator {
                    try await self.waitForCoverage(coordinator: coordinator)
                } else {
                    try await self.discover()
                }
                return endpoint
            }
        } catch is CancellationError where Task.isShuttingDownGracefully {
            return  // stopped while starting
        }
        guard let ready else { return }
        self.onReady(ready)
        try? await gracefulShutdown()
    }

    /// Waits until the coordinator's topology serves, or can start, every expert of the model.
    private func waitForCoverage(coordinator: ServiceEndpoint) async throws {
        let experts = self.checkpoint.layers.flatMap(\.expertAddresses)
        let covered = await self.topology.wait(until: .now + self.configuration.discoveryTimeout) { topology in
            topology.version != 0 && topology.uncovered(experts).isEmpty
        }
        if Task.isCancelled { throw CancellationError() }
        guard covered else {
            throw RouterStartupError.uncoveredByCoordinator(
                self.topology.uncovered(experts), coordinator: coordinator, after: self.configuration.discoveryTimeout)
        }
    }

    /// Asks every `--expert` service what it hosts (retrying until `discoveryTimeout`), fills the topology and checks
    /// that every expert is covered.
    private func discover() async throws {
        let (checkpoint, endpoints) = (self.checkpoint, self.configuration.expertEndpoints)
        let deadline = ContinuousClock.now + self.configuration.discoveryTimeout
        var replicas: [ExpertAddress: [ExpertReplica]] = [:]
        var precisions: [ExpertAddress: [String: Int]] = [:]
        var waiting = endpoints
        while !waiting.isEmpty {
            var stillWaiting: [ServiceEndpoint] = []
            for endpoint in waiting {
                let replica = try self.connections.replica(at: endpoint)
                let description: Moemesh_V1_DescribeExpertsResponse
                do {
                    description = try await replica.describe(deadline: .now + .seconds(2))
                } catch {
                    stillWaiting.append(endpoint)
                    continue
                }
                guard description.hiddenSize == checkpoint.hiddenSize, description.modelType == checkpoint.modelType
                else {
                    throw RouterStartupError.modelMismatch(
                        endpoint,
                        reason: "expected \(checkpoint.modelType) with hidden size \(checkpoint.hiddenSize), "
                            + "got \(description.modelType) with hidden size \(description.hiddenSize)")
                }
                if !description.gateProbes.isEmpty,
                    let reason = self.gateProbes.mismatch(
                        GateProbes(description.gateProbes), source: "the expert service")
                {
                    throw RouterStartupError.modelMismatch(endpoint, reason: reason)
                }
                for key in description.experts { replicas[key.address, default: []].append(replica) }
                for entry in description.precisions {
                    precisions[entry.expert.address, default: [:]][entry.precision, default: 0] += 1
                }
                self.logger.debug(
                    "discovered expert service",
                    metadata: ["endpoint": "\(endpoint)", "experts": "\(description.experts.count)"])
            }
            waiting = stillWaiting
            if !waiting.isEmpty {
                guard ContinuousClock.now < deadline else {
                    throw RouterStartupError.expertsNotAnswering(waiting, after: self.configuration.discoveryTimeout)
                }
                try await Task.sleep(for: .milliseconds(100))  // backoff before asking the silent experts again
            }
        }
        let missing = checkpoint.layers.flatMap(\.expertAddresses).filter { replicas[$0] == nil }
        guard missing.isEmpty else { throw RouterStartupError.uncoveredExperts(missing, endpoints: endpoints) }
        self.topology.update(replicas: replicas, startable: [], pruned: [], version: 0)
        self.topology.setPrecisions(precisions)
    }
}
