import Logging
import MoEModel
import MoEServing
import ServiceLifecycle

/// Configuration of a coordinator (`moemesh coordinator`).
///
/// Keys: `--model` (model folder: its layers and experts), `--scaler none|local|kubernetes`, the coordinator's
/// timing (`Coordinator.Settings`: heartbeat, lease, drain timeout) and autoscaling (`AutoscalePolicy.Settings`,
/// off unless `--autoscale`), plus the serving keys (default port 50050).
public struct CoordinatorConfiguration: Sendable {
    /// Who starts and stops replicas.
    public enum Scaler: Sendable {
        /// Replicas are started by hand (or by another system) and register themselves.
        case none
        /// `moemesh expert` processes, children of the coordinator: `replicas` of each per-expert-index group.
        case local(replicas: Int, threads: Int, executable: String, extraArguments: [String])
        /// Deployments, one per group, `name=selection` pairs (the group's name is its selection).
        case kubernetes(KubernetesClient.Configuration, deployments: [(name: String, selection: String)])
    }

    public var modelPath: String
    public var scaler: Scaler
    public var settings: Coordinator.Settings
    public var serving: ServingConfiguration
    /// Port of the status page, `/status.json` and `/metrics` (0: any free port); nil: none.
    public var httpPort: Int?

    public static let defaultPort = 50050

    public init(
        modelPath: String, scaler: Scaler = .none, settings: Coordinator.Settings = Coordinator.Settings(),
        serving: ServingConfiguration = ServingConfiguration(port: CoordinatorConfiguration.defaultPort),
        httpPort: Int? = nil
    ) {
        self.httpPort = httpPort
        self.modelPath = modelPath
        self.scaler = scaler
        self.settings = settings
        self.serving = serving
    }

    /// The scaler, once the coordinator's own address is known (local replicas register there).
    func makeScaler(
        checkpoint: MoECheckpoint, coordinator endpoint: ServiceEndpoint, logger: Logger
    ) throws -> any ExpertScaler {
        switch self.scaler {
        case .none:
            return StaticScaler()
        case .local(let replicas, let threads, let executable, let extraArguments):
            return LocalProcessScaler(
                configuration: .init(
                    executable: executable, modelPath: self.modelPath,
                    groups: ScalingGroup.perExpertIndex(layers: checkpoint.layers), initialReplicas: replicas,
                    coordinator: endpoint, host: self.serving.host, threads: threads, extraArguments: extraArguments),
                logger: logger)
        case .kubernetes(let client, let deployments):
            let resolved = try deployments.map { deployment in
                guard case .success(let selection) = ExpertSelection.parse(deployment.selection) else {
                    throw ScalerError(
                        "deployment \(deployment.name): '\(deployment.selection)' is not an expert selection")
                }
                let experts = selection.resolve(layers: checkpoint.layers)
                guard !experts.isEmpty else {
                    throw ScalerError(
                        "deployment \(deployment.name): '\(deployment.selection)' matches no expert of the model")
                }
                return KubernetesScaler.Deployment(
                    name: deployment.name,
                    group: ScalingGroup(name: deployment.selection, selection: deployment.selection, experts: experts))
            }
            return KubernetesScaler(
                client: KubernetesClient(configuration: client), deployments: resolved, logger: logger)
        }
    }
}

/// The coordinator process as a `Service`: serves the API, prints `coordinator listening on HOST:PORT`, then
/// starts its scaler (local replicas start here) and runs until shutdown.
public struct CoordinatorApplication: Service {
    public let configuration: CoordinatorConfiguration
    public let logger: Logger

    public init(configuration: CoordinatorConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    public func run() async throws {
        let checkpoint = try MoECheckpoint(path: self.configuration.modelPath)
        let coordinator = Coordinator(
            checkpoint: checkpoint, settings: self.configuration.settings, logger: self.logger)
        let server = CoordinatorServer(coordinator: coordinator, serving: self.configuration.serving)
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await server.serve() }
            let endpoint = try await server.listeningEndpoint
            let scaler = try self.configuration.makeScaler(
                checkpoint: checkpoint, coordinator: endpoint, logger: self.logger)
            try await coordinator.start(scaler: scaler)
            server.health.setAll(.serving)
            group.addTask { try await scaler.run() }
            if let port = self.configuration.httpPort {
                let http = HTTPEndpoint(
                    host: self.configuration.serving.host, port: port,
                    routes: StatusPage.routes(coordinator: coordinator),
                    logger: self.logger, onListening: { ReadyLine.print(role: "http", endpoint: $0) })
                group.addTask { try await http.run() }
            }
            self.logger.info(
                "serving",
                metadata: [
                    "address": "\(endpoint)", "scaler": "\(scaler.name)",
                    "autoscale": "\(self.configuration.settings.autoscale.map { "\($0)" } ?? "off")",
                ])
            ReadyLine.print(role: "coordinator", endpoint: endpoint)
        }
    }
}
