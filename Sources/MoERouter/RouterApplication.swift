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
        guard !configuration.expertEndpoints.isEmpty else { throw RouterStartupError.noExpertEndpoints }
        let checkpoint = try MoECheckpoint(path: configuration.modelPath)
        let pipelines = try checkpoint.layers.map { layer throws(ModelError) in
            try MoELayerPipeline(checkpoint: checkpoint, layer: layer, policy: configuration.routing.policy(for: layer))
        }
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
                let service = RouterService(
                    modelType: checkpoint.modelType, hiddenSize: checkpoint.hiddenSize, pipelines: pipelines,
                    executor: executor, routingSummary: configuration.routing.summary, batching: configuration.batching)
                server = GRPCServer(transport: transport, services: [service])
            } catch {
                clients.forEach { $0.1.beginGracefulShutdown() }
                throw error
            }
            group.addTask {
                // In-flight calls need the expert connections: close them only once the server has stopped.
                defer { clients.forEach { $0.1.beginGracefulShutdown() } }
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
            "serving",
            metadata: ["address": "\(address)", "layers": "\(pipelines.count)", "routing": "\(configuration.routing.summary)"])
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
