import MoECore
import MoEServing

/// Configuration of a router service (`moemesh router`).
///
/// Keys: `--model` (model folder, required: the router holds every MoE layer's gate), `--expert HOST:PORT`
/// (repeated: the expert services; the router asks each what it hosts) or `--coordinator HOST:PORT` (follow the
/// coordinator's topology instead; report demand; cold-start experts scaled to zero), `--expert-timeout-ms` (deadline of one
/// expert call, default 30,000), `--discovery-timeout-s` (how long to wait at start for every expert to answer,
/// default 60; with a coordinator, for its topology to cover the model), `--expert-wire-dtype` (dtype of rows sent to experts, default f32), plus the serving keys
/// (`ServingConfiguration`; the router's default port is 50051), the routing policy (`RoutingConfiguration`), and
/// dynamic batching (`--batching on|off`, default on; `--batch-max-tokens` 4096; `--batch-delay-us` 2000, under
/// concurrent load only; `--batch-concurrency` 2: see `ForwardBatcher`), and hedging and ejection of expert replicas
/// (`--expert-calls stream|unary`, default stream; `--hedging on|off`, default on; `--hedge-factor` 2, `--hedge-floor-ms` 5, `--hedge-ceiling-ms` 250,
/// `--hedge-budget` 0.1; `--eject-after-hedge-losses` 3, `--ejection-ms` 1,000: see `ReplicaScheduler`), and
/// `--unix-sockets on|off` (default on: replicas on this host are reached through their Unix domain socket).
public struct RouterConfiguration: Sendable {
    public var modelPath: String
    public var expertEndpoints: [ServiceEndpoint]
    /// When set, replicas come from the coordinator's topology (`expertEndpoints` is unused).
    public var coordinator: ServiceEndpoint?
    /// Names this router in the coordinator's status.
    public var routerID: String
    public var expertTimeout: Duration
    public var discoveryTimeout: Duration
    public var expertWireDType: DType
    public var routing: RoutingConfiguration
    /// nil: every call runs on its own.
    public var batching: ForwardBatcher.Configuration?
    /// Replica choice, hedging and ejection.
    public var replicas: ReplicaScheduler.Configuration
    /// Expert calls over one long-lived `ComputeStream` per replica (`--expert-calls stream`, the default), or one
    /// unary `Compute` RPC each (`unary`).
    public var expertStreams: Bool
    /// Replicas on this host that registered a Unix domain socket are reached through it (else over TCP).
    public var unixSockets: Bool
    public var serving: ServingConfiguration

    public static let defaultPort = 50051

    public init(
        modelPath: String, expertEndpoints: [ServiceEndpoint], expertTimeout: Duration = .seconds(30),
        discoveryTimeout: Duration = .seconds(60), expertWireDType: DType = .f32,
        routing: RoutingConfiguration = RoutingConfiguration(),
        batching: ForwardBatcher.Configuration? = ForwardBatcher.Configuration(),
        replicas: ReplicaScheduler.Configuration = ReplicaScheduler.Configuration(), expertStreams: Bool = true,
        unixSockets: Bool = true,
        serving: ServingConfiguration = ServingConfiguration(port: RouterConfiguration.defaultPort),
        coordinator: ServiceEndpoint? = nil, routerID: String = "router"
    ) {
        self.modelPath = modelPath
        self.expertEndpoints = expertEndpoints
        self.coordinator = coordinator
        self.routerID = routerID
        self.expertTimeout = expertTimeout
        self.discoveryTimeout = discoveryTimeout
        self.expertWireDType = expertWireDType
        self.routing = routing
        self.batching = batching
        self.replicas = replicas
        self.expertStreams = expertStreams
        self.unixSockets = unixSockets
        self.serving = serving
    }
}
