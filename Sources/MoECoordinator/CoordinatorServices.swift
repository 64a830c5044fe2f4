import Logging
import MoECore
import MoEModel
import MoEPolicy
import MoEProto
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
        /// Made once the coordinator's own address is known (local replicas register there):
        /// `MoELocalMesh`'s `.local(…)` runs `moemesh expert` processes as children of the coordinator.
        case custom(@Sendable (ScalerContext) throws -> any ExpertScaler)
        /// Deployments, one per group, `name=selection` pairs (the group's name is its selection).
        /// Deployments by name with the experts each runs and the replicas planned for it (nil: whatever it has).
        case kubernetes(
            KubernetesClient.Configuration, deployments: [(name: String, selection: String, plannedReplicas: Int?)])
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
        case .custom(let make):
            return try make(
                ScalerContext(
                    checkpoint: checkpoint, coordinator: endpoint, modelPath: self.modelPath, host: self.serving.host,
                    logger: logger))
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
                    group: ScalingGroup(name: deployment.selection, selection: deployment.selection, experts: experts),
                    plannedReplicas: deployment.plannedReplicas)
            }
            return KubernetesScaler(
                client: KubernetesClient(configuration: client), deployments: resolved, logger: logger)
        }
    }
}

/// What a scaler is made from, once the coordinator listens.
public struct ScalerContext: Sendable {
    public let checkpoint: MoECheckpoint
    /// The coordinator's own address: replicas register there.
    public let coordinator: ServiceEndpoint
    public let modelPath: String
    /// The address the coordinator listens on (local replicas listen there too).
    public let host: String
    public let logger: Logger
}

/// Builds a coordinator from its configuration and returns the services to run in a `ServiceGroup`, in order: the
/// gRPC server with the coordinator's loop, the HTTP endpoint (with `httpPort`: `httpRoutes` of the coordinator, the
/// status page, which is the views' to draw), then the scaler, which starts once
/// the server listens (local replicas register there), makes the coordinator ready and prints
/// `coordinator listening on HOST:PORT`, last of its ready lines (the status page's comes first). A group shuts its services down last first: the scaler stops its replicas
/// while the coordinator still serves their deregistration.
public func buildCoordinatorServices(
    configuration: CoordinatorConfiguration, httpRoutes: @Sendable (Coordinator) -> HTTPEndpoint.Routes, logger: Logger
) throws -> [any Service] {
    let checkpoint = try MoECheckpoint(path: configuration.modelPath)
    let coordinator = Coordinator(checkpoint: checkpoint, settings: configuration.settings, logger: logger)
    let server = CoordinatorServer(coordinator: coordinator, serving: configuration.serving)
    let httpListening = configuration.httpPort.map { _ in SetOnce<ServiceEndpoint>() }
    let http = configuration.httpPort.map { port in
        HTTPEndpoint(
            host: configuration.serving.host, port: port,
            routes: httpRoutes(coordinator),
            logger: logger, tls: configuration.serving.tls,
            onListening: { endpoint in
                ReadyLine.print(role: "http", endpoint: endpoint)
                httpListening?.set(endpoint)
            })
    }
    let scaling = ScalerService(
        configuration: configuration, checkpoint: checkpoint, coordinator: coordinator, server: server,
        httpListening: httpListening, logger: logger)
    let reloader = configuration.serving.acceptedTokens.map { [AuthTokensReloader(tokens: $0, logger: logger)] } ?? []
    return reloader + [server] + (http.map { [$0] } ?? []) + [scaling]
}

extension CoordinatorServer: Service {
    public func run() async throws { try await self.serve() }
}

/// Starts the configured scaler once the coordinator listens, marks the coordinator ready, and runs the scaler until
/// shutdown (a local scaler then stops its replicas).
struct ScalerService: Service {
    let configuration: CoordinatorConfiguration
    let checkpoint: MoECheckpoint
    let coordinator: Coordinator
    let server: CoordinatorServer
    /// Set when the status page listens; the ready line waits for it.
    let httpListening: SetOnce<ServiceEndpoint>?
    let logger: Logger

    func run() async throws {
        let endpoint = try await self.server.listeningEndpoint
        let scaler = try self.configuration.makeScaler(
            checkpoint: self.checkpoint, coordinator: endpoint, logger: self.logger)
        try await self.coordinator.start(scaler: scaler)
        self.server.health.setAll(.serving)
        self.logger.info(
            "serving",
            metadata: [
                "address": "\(endpoint)", "scaler": "\(scaler.name)",
                "autoscale": "\(self.configuration.settings.autoscale.map { "\($0)" } ?? "off")",
            ])
        if let httpListening, await httpListening.wait() == nil { return }  // cancelled
        ReadyLine.print(role: "coordinator", endpoint: endpoint)
        try await scaler.run()
        // A scaler with nothing to run (none, Kubernetes) returns at once: the service stays until shutdown.
        try? await gracefulShutdown()
    }
}
