import Logging
import MoECore
import MoEModel
import MoEPolicy
import MoEServing

/// The coordinator's state and decisions: the registry of expert replicas (leases kept by heartbeats), the
/// topology routers watch, the demand they report, scaling groups and their desired replicas, pruned experts,
/// drains, cold starts and the autoscaling loop (`tick`). Acts through an `ExpertScaler`. Speaks its own types
/// (`Domain/`), not protobuf: `CoordinatorService` maps at the edge. One file per concern: `+Registry`,
/// `+Topology`, `+Demand` (demand, cold start, admin), `+Loop`, `+Status`.
public actor Coordinator {
    public struct Settings: Sendable {
        /// How often replicas heartbeat; a replica silent for `lease` is removed.
        public var heartbeatInterval: Duration
        public var lease: Duration
        /// After a (re)start, how long to wait for replicas to register before sending routers a topology (unless
        /// every group the scaler runs is up sooner): a restarted coordinator must not tell routers the mesh is empty.
        public var warmUp: Duration
        /// Demand is averaged over this window.
        public var demandWindow: Duration
        /// How often the autoscaling policy runs.
        public var policyInterval: Duration
        /// A draining replica is stopped once it reports no rows in flight, or after this long.
        public var drainTimeout: Duration
        /// nil: no autoscaling (cold start and admin actions still work).
        public var autoscale: AutoscalePolicy.Settings?
        /// Whether autoscaling starts held (until `pauseAutoscaling(false)`).
        public var autoscaleStartsPaused = false

        public init(
            heartbeatInterval: Duration = .milliseconds(500), lease: Duration = .seconds(3),
            warmUp: Duration = .seconds(4), demandWindow: Duration = .seconds(5),
            policyInterval: Duration = .seconds(1),
            drainTimeout: Duration = .seconds(30), autoscale: AutoscalePolicy.Settings? = nil
        ) {
            self.heartbeatInterval = heartbeatInterval
            self.lease = lease
            self.warmUp = warmUp
            self.demandWindow = demandWindow
            self.policyInterval = policyInterval
            self.drainTimeout = drainTimeout
            self.autoscale = autoscale
        }
    }

    struct ReplicaRecord {
        let id: String
        let endpoint: String
        let group: String
        let experts: [ExpertAddress]
        let device: String
        let instance: String
        /// A Unix domain socket it also listens on, and the host it is on (see `HostIdentity`).
        let unixSocket: String
        let hostID: String
        let precisions: [ExpertAddress: String]
        var lastHeartbeat: ContinuousClock.Instant
        var load = ReplicaLoad()
        var drainingSince: ContinuousClock.Instant? = nil
        var heartbeatsSinceDrain = 0
        var retired = false
        /// Routers that ejected it, until when, and why.
        var ejections: [String: (until: ContinuousClock.Instant, reason: String)] = [:]
        /// How each router reaches it ("tcp HOST:PORT", "unix PATH"), from its latest report.
        var links: [String: String] = [:]

        var isServing: Bool { self.drainingSince == nil }

        var replica: Replica {
            Replica(
                id: self.id, endpoint: self.endpoint, group: self.group, experts: self.experts,
                state: self.isServing ? .serving : .draining, device: self.device, instance: self.instance,
                unixSocket: self.unixSocket, hostID: self.hostID, precisions: self.precisions)
        }
    }

    struct GroupRecord {
        let group: ScalingGroup
        var desired: Int
        var lastChange: ContinuousClock.Instant
        /// Whether the scaler can start its replicas.
        var startable: Bool
    }

    public let settings: Settings
    public let modelType: String
    public let hiddenSize: Int
    /// The served checkpoint's gate probes: a replica that loaded another model's is refused.
    public let gateProbes: GateProbes
    let layers: [String: MoELayerSpec]
    var scaler: any ExpertScaler = StaticScaler()
    let policy: AutoscalePolicy?
    let logger: Logger
    let startedAt = ContinuousClock.now
    /// Prometheus series (see `ServiceMetrics`).
    public let metrics = ServiceMetrics()

    var replicas: [String: ReplicaRecord] = [:]
    var groups: [String: GroupRecord] = [:]
    var pruned: Set<ExpertAddress> = []
    var demand: DemandWindow
    /// Routers' co-activation counts over the same window.
    var coactivation: CoactivationWindow
    var decisions: [ScalingDecisionRecord] = []
    var version: UInt64 = 1
    /// Announced at each change of the registry (with `version`): what a wait inside the actor sleeps on.
    let changes = StateChanges()
    var topologyReady = false
    var lastPolicyRun = ContinuousClock.now
    var watchers: [Int: (router: String, continuation: AsyncStream<Topology>.Continuation)] = [:]
    /// Tasks waiting until experts are served (`waitUntilCovered`), by id.
    var coverageWaiters: [Int: (experts: [ExpertAddress], continuation: CheckedContinuation<Void, Never>)] = [:]
    var nextWatcher = 0
    var routersSeen: [String: ContinuousClock.Instant] = [:]
    var closed = false
    var autoscalePaused = false
    /// Groups a plan replaced: their replicas drain, then the records go (`tick`).
    var retiringGroups: Set<String> = []

    /// Decisions kept for the status.
    static let decisionLog = 50

    public init(checkpoint: MoECheckpoint, settings: Settings, logger: Logger) {
        self.settings = settings
        self.modelType = checkpoint.modelType
        self.hiddenSize = checkpoint.hiddenSize
        // A checkpoint whose gates cannot be read fails at the router and the experts, which read them too.
        self.gateProbes = (try? GateProbes(checkpoint: checkpoint)) ?? GateProbes(layers: [])
        self.layers = Dictionary(uniqueKeysWithValues: checkpoint.layers.map { ($0.name, $0) })
        self.policy = settings.autoscale.map(AutoscalePolicy.init(settings:))
        self.logger = logger
        self.demand = DemandWindow(window: settings.demandWindow)
        self.coactivation = CoactivationWindow(window: settings.demandWindow)
        self.autoscalePaused = settings.autoscaleStartsPaused
    }

    /// Takes `scaler` (until then, none), learns its groups and asks it for their replicas (local processes start
    /// here).
    public func start(scaler: any ExpertScaler) async throws {
        self.scaler = scaler
        let now = ContinuousClock.now
        for (group, replicas) in try await self.scaler.initialGroups() {
            self.groups[group.name] = GroupRecord(
                group: group, desired: replicas, lastChange: now, startable: self.scaler.canStart)
            if replicas > 0 { try await self.scaler.setReplicas(replicas, of: group) }
        }
    }
}
