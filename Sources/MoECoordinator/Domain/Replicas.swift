import MoECore

/// What a replica says of itself when it registers.
public struct ReplicaRegistration: Sendable, Equatable {
    /// HOST:PORT routers reach it at.
    public var endpoint: String
    /// The scaling group it belongs to (its expert selection, or a deployment's name).
    public var group: String
    public var experts: [ExpertAddress]
    public var device: String
    public var modelType: String
    public var hiddenSize: Int
    /// Process id (local processes) or pod name.
    public var instance: String
    /// A Unix domain socket it also listens on ("" for none), and the host it is on (see `HostIdentity`).
    public var unixSocket: String
    public var hostID: String
    /// How each expert's weights are stored ("f32", "bf16", "int8", "fp8"), as the replica says.
    public var precisions: [ExpertAddress: String]
    /// The gate probes of the checkpoint it loaded (empty: not said).
    public var gateProbes: GateProbes

    public init(
        endpoint: String, group: String, experts: [ExpertAddress], device: String = "cpu", modelType: String,
        hiddenSize: Int, instance: String = "", unixSocket: String = "", hostID: String = "",
        precisions: [ExpertAddress: String] = [:], gateProbes: GateProbes = GateProbes(layers: [])
    ) {
        self.precisions = precisions
        self.gateProbes = gateProbes
        self.endpoint = endpoint
        self.group = group
        self.experts = experts
        self.device = device
        self.modelType = modelType
        self.hiddenSize = hiddenSize
        self.instance = instance
        self.unixSocket = unixSocket
        self.hostID = hostID
    }
}

/// What the coordinator grants a registered replica: its id, how often to heartbeat, and how long a silence it
/// tolerates before removing it.
public struct ReplicaLease: Sendable, Equatable {
    public let replicaID: String
    public let heartbeatInterval: Duration
    public let lease: Duration
}

/// A replica's load, as its heartbeats report it.
public struct ReplicaLoad: Sendable, Equatable {
    public var inFlightRows: Int
    public var rowsPerSecond: Double
    public var latencyP50Ms: Double
    public var latencyP99Ms: Double
    /// Rows per hosted expert since it started, in the order of its registration's experts.
    public var rowsPerExpert: [Int]

    public init(
        inFlightRows: Int = 0, rowsPerSecond: Double = 0, latencyP50Ms: Double = 0, latencyP99Ms: Double = 0,
        rowsPerExpert: [Int] = []
    ) {
        self.inFlightRows = inFlightRows
        self.rowsPerSecond = rowsPerSecond
        self.latencyP50Ms = latencyP50Ms
        self.latencyP99Ms = latencyP99Ms
        self.rowsPerExpert = rowsPerExpert
    }
}

/// Serving replicas get new work; draining ones finish what they have and are then stopped.
public enum ReplicaState: Sendable, Equatable {
    case serving, draining
}

/// The coordinator's answer to a heartbeat: whether it knows the replica (if not, the replica registers again) and
/// the replica's state.
public struct HeartbeatAnswer: Sendable, Equatable {
    public let known: Bool
    public let state: ReplicaState
}

/// A registered replica, as routers see it in the topology.
public struct Replica: Sendable, Equatable {
    public let id: String
    public let endpoint: String
    public let group: String
    public let experts: [ExpertAddress]
    public let state: ReplicaState
    public let device: String
    public let instance: String
    public let unixSocket: String
    public let hostID: String
    /// How each expert's weights are stored there (empty when the replica did not say).
    public var precisions: [ExpertAddress: String] = [:]
}

/// Where every expert is served: the replicas (serving and draining), the experts no replica serves that a scaler
/// can start, and the experts pruned from routing. `version` grows with each change.
public struct Topology: Sendable, Equatable {
    public let version: UInt64
    public let replicas: [Replica]
    public let startable: [ExpertAddress]
    public let pruned: [ExpertAddress]
}

/// What a router reports every second: rows it sent to each expert since its last report, replicas it ejected,
/// and how it reaches each replica.
public struct DemandReport: Sendable, Equatable {
    /// A replica a router stopped choosing for a while (unreachable, or far slower than its peers).
    public struct Ejection: Sendable, Equatable {
        public let endpoint: String
        public let reason: String
        public let duration: Duration

        public init(endpoint: String, reason: String, duration: Duration) {
            self.endpoint = endpoint
            self.reason = reason
            self.duration = duration
        }
    }

    public let routerID: String
    public let rows: [ExpertAddress: Int]
    public let ejections: [Ejection]
    /// Endpoint → how the router reaches it ("tcp HOST:PORT", "unix PATH").
    public let links: [String: String]
    /// Layer → which experts its tokens chose together since the router's previous report.
    public let coactivation: [String: Coactivation]

    public init(
        routerID: String, rows: [ExpertAddress: Int], ejections: [Ejection] = [], links: [String: String] = [:],
        coactivation: [String: Coactivation] = [:]
    ) {
        self.coactivation = coactivation
        self.routerID = routerID
        self.rows = rows
        self.ejections = ejections
        self.links = links
    }
}
