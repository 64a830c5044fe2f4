import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import MoECore
import MoEModel
import MoEProto
import MoERuntime
import MoEServing
import ServiceLifecycle

/// The router process as a `Service`: loads every MoE layer's gate, connects to the expert services, asks each
/// what it hosts (retrying until `discoveryTimeout`, so experts may start in any order), checks that every
/// expert of every layer is covered, then serves `Router` and prints `router listening on HOST:PORT`.
public struct RouterApplication: Service {
    public let configuration: RouterConfiguration
    public let logger: Logger
    private let onListening: @Sendable (ServiceEndpoint) -> Void

    public init(
        configuration: RouterConfiguration, logger: Logger,
        onListening: @escaping @Sendable (ServiceEndpoint) -> Void = { ReadyLine.print(role: "router", endpoint: $0) }
    ) {
        self.configuration = configuration
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        let configuration = self.configuration
        if configuration.coordinator == nil && configuration.expertEndpoints.isEmpty {
            throw RouterStartupError.noExpertEndpoints
        }
        let checkpoint = try MoECheckpoint(path: configuration.modelPath)
        let pipelines = try checkpoint.layers.map { layer throws(ModelError) in
            try MoELayerPipeline(checkpoint: checkpoint, layer: layer, policy: configuration.routing.policy(for: layer))
        }
        let serving = configuration.serving
        let connections = ExpertConnections(
            serving: serving, streams: configuration.expertStreams, unixSockets: configuration.unixSockets)
        let metrics = ServiceMetrics()
        let logger = self.logger
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
                coordinator: coordinator, routerID: configuration.routerID, topology: topology,
                connections: connections,
                scheduler: scheduler, serving: serving, logger: self.logger)
        }
        let expertTimeout = configuration.expertTimeout
        var coldStart: (@Sendable (ExpertAddress) async throws -> Void)? = nil
        if let link {
            coldStart = { address in try await link.coldStart(address, timeout: expertTimeout) }
        }
        let executor = RemoteExpertExecutor(
            topology: topology, scheduler: scheduler, wireDType: configuration.expertWireDType,
            callOptions: serving.callOptions(), expertTimeout: expertTimeout, demand: link?.demand,
            coldStart: coldStart,
            metrics: metrics)
        let readiness = Readiness(notReady: "waiting for expert replicas")
        let prefetch: (@Sendable ([ExpertAddress]) -> Void)?
        if configuration.routing.prefetchNextLayer {
            prefetch = { addresses in executor.prefetch(addresses) }
        } else {
            prefetch = nil
        }
        let service = RouterService(
            modelType: checkpoint.modelType, hiddenSize: checkpoint.hiddenSize, pipelines: pipelines,
            executor: executor,
            routingSummary: configuration.routing.summary, batching: configuration.batching,
            prunedExperts: { topology.pruned(layer: $0) }, readiness: readiness, metrics: metrics,
            prefetch: prefetch)
        let health = HealthService(services: [Moemesh_V1_Router.descriptor.fullyQualifiedService])
        let transport = serving.makeServerTransport()
        let server = GRPCServer(
            transport: transport, services: [service, health],
            interceptors: [
                RPCMetricsInterceptor(metrics: metrics, service: "router"),
                TracingServerInterceptor(logger: self.logger),
                DeadlineServerInterceptor(), RPCCancellationInterceptor(),
            ])

        // The server answers at once (health NOT_SERVING, Forward UNAVAILABLE) and turns ready once every expert is
        // served (or, under a coordinator, startable).
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await connections.run() }
            if let link { group.addTask { try await link.run() } }
            group.addTask {
                // In-flight calls need the expert connections: close them only once the server has stopped.
                defer { connections.close() }
                try await withGracefulShutdownHandler {
                    try await server.serve()
                } onGracefulShutdown: {
                    health.shutDown()
                    server.beginGracefulShutdown()
                }
            }
            let address = try await transport.listeningAddress
            if let coordinator = configuration.coordinator {
                try await self.waitForCoverage(topology: topology, checkpoint: checkpoint, coordinator: coordinator)
            } else {
                try await self.discover(connections: connections, topology: topology, checkpoint: checkpoint)
            }
            readiness.setReady()
            health.setAll(.serving)
            if let endpoint = ServiceEndpoint(listening: address) { self.onListening(endpoint) }
            self.logger.info(
                "serving",
                metadata: [
                    "address": "\(address)", "layers": "\(pipelines.count)",
                    "routing": "\(configuration.routing.summary)",
                ])
        }
    }

    /// Waits until the coordinator's topology serves, or can start, every expert of the model.
    private func waitForCoverage(topology: ExpertTopology, checkpoint: MoECheckpoint, coordinator: ServiceEndpoint)
        async throws
    {
        let experts = checkpoint.layers.flatMap(\.expertAddresses)
        let covered = await cancelWhenGracefulShutdown {
            await topology.wait(until: .now + self.configuration.discoveryTimeout) { topology in
                topology.version != 0 && topology.uncovered(experts).isEmpty
            }
        }
        guard covered else {
            throw RouterStartupError.uncoveredByCoordinator(
                topology.uncovered(experts), coordinator: coordinator, after: self.configuration.discoveryTimeout)
        }
    }

    /// Asks every `--expert` service what it hosts (retrying until `discoveryTimeout`), fills `topology` and checks
    /// that every expert is covered.
    private func discover(connections: ExpertConnections, topology: ExpertTopology, checkpoint: MoECheckpoint)
        async throws
    {
        let endpoints = self.configuration.expertEndpoints
        let deadline = ContinuousClock.now + self.configuration.discoveryTimeout
        var replicas: [ExpertAddress: [ExpertReplica]] = [:]
        var waiting = endpoints
        while !waiting.isEmpty {
            var stillWaiting: [ServiceEndpoint] = []
            for endpoint in waiting {
                let replica = try connections.replica(at: endpoint)
                let description: Moemesh_V1_DescribeExpertsResponse
                do {
                    description = try await replica.describe(
                        options: self.configuration.serving.callOptions(timeout: .seconds(2)))
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
                for key in description.experts { replicas[key.address, default: []].append(replica) }
                self.logger.debug(
                    "discovered expert service",
                    metadata: ["endpoint": "\(endpoint)", "experts": "\(description.experts.count)"])
            }
            waiting = stillWaiting
            if !waiting.isEmpty {
                guard ContinuousClock.now < deadline, !Task.isShuttingDownGracefully else {
                    throw RouterStartupError.expertsNotAnswering(waiting, after: self.configuration.discoveryTimeout)
                }
                try await Task.sleep(for: .milliseconds(100))  // backoff before asking the silent experts again
            }
        }
        let missing = checkpoint.layers.flatMap(\.expertAddresses).filter { replicas[$0] == nil }
        guard missing.isEmpty else { throw RouterStartupError.uncoveredExperts(missing, endpoints: endpoints) }
        topology.update(replicas: replicas, startable: [], pruned: [], version: 0)
    }
}
