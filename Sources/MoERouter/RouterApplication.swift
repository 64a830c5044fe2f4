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
        let checkpoint = try MoECheckpoint(path: configuration.modelPath)
        let pipelines = try checkpoint.layers.map { layer throws(ModelError) in
            try MoELayerPipeline(checkpoint: checkpoint, layer: layer, policy: configuration.routing.policy(for: layer))
        }
        if let coordinator = configuration.coordinator {
            try await self.runFollowing(coordinator: coordinator, checkpoint: checkpoint, pipelines: pipelines)
        } else {
            try await self.runWithFixedExperts(checkpoint: checkpoint, pipelines: pipelines)
        }
    }

    private func makeService(
        checkpoint: MoECheckpoint, pipelines: [MoELayerPipeline], executor: RemoteExpertExecutor
    ) -> RouterService {
        RouterService(
            modelType: checkpoint.modelType, hiddenSize: checkpoint.hiddenSize, pipelines: pipelines, executor: executor,
            routingSummary: self.configuration.routing.summary, batching: self.configuration.batching,
            prunedExperts: { [topology = executor.topology] in topology.pruned(layer: $0) })
    }

    /// Serves `server` until graceful shutdown, announcing its address; `onStopped` runs once it has stopped.
    private func serve(
        _ server: GRPCServer<HTTP2ServerTransport.Posix>, transport: HTTP2ServerTransport.Posix, layers: Int,
        in group: inout ThrowingDiscardingTaskGroup<any Error>, onStopped: @escaping @Sendable () -> Void
    ) async throws {
        group.addTask {
            // In-flight calls need the expert connections: close them only once the server has stopped.
            defer { onStopped() }
            try await withGracefulShutdownHandler {
                try await server.serve()
            } onGracefulShutdown: {
                server.beginGracefulShutdown()
            }
        }
        let address = try await transport.listeningAddress
        if let ipv4 = address.ipv4 {
            self.onListening(ServiceEndpoint(host: ipv4.host, port: ipv4.port))
        } else if let ipv6 = address.ipv6 {
            self.onListening(ServiceEndpoint(host: ipv6.host, port: ipv6.port))
        }
        self.logger.info(
            "serving", metadata: ["address": "\(address)", "layers": "\(layers)", "routing": "\(self.configuration.routing.summary)"])
    }

    /// Replicas from the coordinator's topology, kept up to date; demand reported; cold starts on demand.
    private func runFollowing(
        coordinator: ServiceEndpoint, checkpoint: MoECheckpoint, pipelines: [MoELayerPipeline]
    ) async throws {
        let configuration = self.configuration
        let serving = configuration.serving
        let connections = ExpertConnections(serving: serving)
        let topology = ExpertTopology(replicas: [:])
        let link = try CoordinatorLink(
            coordinator: coordinator, routerID: configuration.routerID, topology: topology, connections: connections,
            serving: serving, logger: self.logger)
        let expertTimeout = configuration.expertTimeout
        let executor = RemoteExpertExecutor(
            topology: topology, wireDType: configuration.expertWireDType,
            callOptions: serving.callOptions(timeout: expertTimeout), demand: link.demand,
            coldStart: { address in try await link.coldStart(address, timeout: expertTimeout) })
        let transport = serving.makeServerTransport()
        let server = GRPCServer(transport: transport, services: [self.makeService(checkpoint: checkpoint, pipelines: pipelines, executor: executor)])

        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await connections.run() }
            group.addTask { try await link.run() }
            do {
                let experts = checkpoint.layers.flatMap(\.expertAddresses)
                let deadline = ContinuousClock.now + configuration.discoveryTimeout
                while topology.version == 0 || !topology.uncovered(experts).isEmpty {
                    guard ContinuousClock.now < deadline, !Task.isShuttingDownGracefully else {
                        throw RouterStartupError.uncoveredByCoordinator(
                            topology.uncovered(experts), coordinator: coordinator, after: configuration.discoveryTimeout)
                    }
                    try await Task.sleep(for: .milliseconds(50))
                }
            } catch {
                connections.close()
                throw error
            }
            try await self.serve(server, transport: transport, layers: pipelines.count, in: &group) { connections.close() }
        }
    }

    /// Replicas from the `--expert` endpoints, asked once what they host.
    private func runWithFixedExperts(checkpoint: MoECheckpoint, pipelines: [MoELayerPipeline]) async throws {
        let configuration = self.configuration
        guard !configuration.expertEndpoints.isEmpty else { throw RouterStartupError.noExpertEndpoints }
        let serving = configuration.serving
        let clients = try configuration.expertEndpoints.map { endpoint in
            (endpoint, GRPCClient(transport: try serving.makeClientTransport(to: endpoint)))
        }
        let transport = serving.makeServerTransport()

        try await withThrowingDiscardingTaskGroup { group in
            for (_, client) in clients {
                group.addTask { try await client.runConnections() }
            }
            let server: GRPCServer<HTTP2ServerTransport.Posix>
            do {
                let topology = try await self.discover(clients: clients, checkpoint: checkpoint)
                let executor = RemoteExpertExecutor(
                    topology: topology, wireDType: configuration.expertWireDType,
                    callOptions: serving.callOptions(timeout: configuration.expertTimeout))
                server = GRPCServer(transport: transport, services: [self.makeService(checkpoint: checkpoint, pipelines: pipelines, executor: executor)])
            } catch {
                clients.forEach { $0.1.beginGracefulShutdown() }
                throw error
            }
            try await self.serve(server, transport: transport, layers: pipelines.count, in: &group) {
                clients.forEach { $0.1.beginGracefulShutdown() }
            }
        }
    }

    /// Asks every expert service what it hosts; builds the topology and checks coverage.
    private func discover(
        clients: [(ServiceEndpoint, GRPCClient<HTTP2ClientTransport.Posix>)], checkpoint: MoECheckpoint
    ) async throws -> ExpertTopology {
        let deadline = ContinuousClock.now + self.configuration.discoveryTimeout
        var replicas: [ExpertAddress: [ExpertReplica]] = [:]
        var waiting = clients
        while !waiting.isEmpty {
            var stillWaiting: [(ServiceEndpoint, GRPCClient<HTTP2ClientTransport.Posix>)] = []
            for (endpoint, client) in waiting {
                let expertClient = Moemesh_V1_Expert.Client(wrapping: client)
                let description: Moemesh_V1_DescribeExpertsResponse
                do {
                    description = try await expertClient.describeExperts(
                        Moemesh_V1_DescribeExpertsRequest(), options: self.configuration.serving.callOptions(timeout: .seconds(2)))
                } catch {
                    stillWaiting.append((endpoint, client))
                    continue
                }
                guard description.hiddenSize == checkpoint.hiddenSize, description.modelType == checkpoint.modelType else {
                    throw RouterStartupError.modelMismatch(
                        endpoint,
                        reason: "expected \(checkpoint.modelType) with hidden size \(checkpoint.hiddenSize), "
                            + "got \(description.modelType) with hidden size \(description.hiddenSize)")
                }
                let replica = ExpertReplica(endpoint: endpoint, client: expertClient)
                for key in description.experts {
                    replicas[ExpertAddress(layer: key.layer, expert: Int(key.expert)), default: []].append(replica)
                }
                self.logger.debug("discovered expert service", metadata: ["endpoint": "\(endpoint)", "experts": "\(description.experts.count)"])
            }
            waiting = stillWaiting
            if !waiting.isEmpty {
                guard ContinuousClock.now < deadline, !Task.isShuttingDownGracefully else {
                    throw RouterStartupError.expertsNotAnswering(
                        waiting.map(\.0), after: self.configuration.discoveryTimeout)
                }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        let missing = checkpoint.layers.flatMap(\.expertAddresses).filter { replicas[$0] == nil }
        guard missing.isEmpty else {
            throw RouterStartupError.uncoveredExperts(missing, endpoints: clients.map(\.0))
        }
        return ExpertTopology(replicas: replicas)
    }
}
