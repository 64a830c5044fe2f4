import MoECore

/// A change of a group's desired replicas, and why: the autoscaler's, a cold start's, or an admin action's.
public struct ScalingDecisionRecord: Sendable, Equatable {
    /// Milliseconds since 1970-01-01 UTC.
    public let atUnixMs: Int64
    public let group: String
    public let from: Int
    public let to: Int
    public let reason: String
}

/// The coordinator's view of the mesh, for `moemesh status`, the status page and tests.
public struct CoordinatorStatus: Sendable, Equatable {
    public struct ReplicaStatus: Sendable, Equatable {
        public let replica: Replica
        public let load: ReplicaLoad
        /// Time since its last heartbeat.
        public let sinceHeartbeat: Duration
        /// "ROUTER: reason" for each router that ejected it recently.
        public let ejectedBy: [String]
        /// "ROUTER: tcp HOST:PORT" or "ROUTER: unix PATH", by router.
        public let links: [String]
    }

    public struct GroupStatus: Sendable, Equatable {
        public let group: String
        public let experts: [ExpertAddress]
        public let desiredReplicas: Int
        public let servingReplicas: Int
        public let demandRowsPerSecond: Double
        /// starting, draining, scaled to zero, idle or active.
        public let state: String
    }

    public struct ExpertStatus: Sendable, Equatable {
        public let expert: ExpertAddress
        public let demandRowsPerSecond: Double
        public let servingReplicas: Int
        public let pruned: Bool
    }

    public let modelType: String
    /// The scaler's name: none, local, kubernetes.
    public let scaler: String
    public let autoscale: Bool
    public let topologyVersion: UInt64
    public let replicas: [ReplicaStatus]
    public let groups: [GroupStatus]
    public let experts: [ExpertStatus]
    /// The most recent, oldest first.
    public let decisions: [ScalingDecisionRecord]
    /// Mean over max of the serving replicas' rows per second (1: perfectly even).
    public let replicaBalancedness: Double
    /// Routers heard from in the last 10 s.
    public let routers: [String]
    /// Layer → which experts were chosen together over the demand window, summed over routers.
    public var coactivation: [String: Coactivation] = [:]
}
