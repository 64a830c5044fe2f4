import MoECore
import MoEProto
import MoEWire

// The coordinator's domain types ↔ their protobuf messages: used at the service edge (`CoordinatorService`) and by
// whoever shows an in-process coordinator's status the way `moemesh status` shows a remote one.

extension ReplicaRegistration {
    public init(_ message: Moemesh_V1_RegisterRequest) {
        self.init(
            endpoint: message.endpoint, group: message.group, experts: message.experts.map(\.address),
            device: message.device, modelType: message.modelType, hiddenSize: Int(message.hiddenSize),
            instance: message.instance, unixSocket: message.unixSocket, hostID: message.hostID,
            precisions: Dictionary(
                message.precisions.map { ($0.expert.address, $0.precision) }, uniquingKeysWith: { _, last in last }),
            gateProbes: GateProbes(message.gateProbes))
    }
}

extension ReplicaLoad {
    public init(_ message: Moemesh_V1_ReplicaLoad) {
        self.init(
            inFlightRows: Int(message.inFlightRows), rowsPerSecond: message.rowsPerSecond,
            latencyP50Ms: message.latencyP50Ms, latencyP99Ms: message.latencyP99Ms,
            rowsPerExpert: message.rowsPerExpert.map { Int($0) })
    }
}

extension DemandReport {
    /// - Throws: `CoactivationError` for a malformed co-activation count.
    public init(_ message: Moemesh_V1_DemandReport) throws(CoactivationError) {
        var coactivation: [String: Coactivation] = [:]
        for item in message.coactivation {
            let counts = try Coactivation(item)
            if let previous = coactivation[item.layer], previous.experts != counts.experts {
                throw CoactivationError(
                    layer: item.layer,
                    reason: "num_experts: expected \(previous.experts) as in its other entry, got \(counts.experts)")
            }
            coactivation[item.layer, default: Coactivation(experts: counts.experts)].merge(counts)
        }
        var rows: [ExpertAddress: Int] = [:]
        for item in message.demand { rows[item.expert.address, default: 0] += Int(item.rows) }
        self.init(
            routerID: message.routerID, rows: rows,
            ejections: message.ejections.map {
                Ejection(endpoint: $0.endpoint, reason: $0.reason, duration: .milliseconds($0.durationMs))
            },
            links: Dictionary(
                message.links.map { ($0.endpoint, $0.transport) }, uniquingKeysWith: { first, _ in first }),
            coactivation: coactivation)
    }
}

extension Moemesh_V1_RegisterResponse {
    public init(_ lease: ReplicaLease) {
        self.init()
        self.replicaID = lease.replicaID
        self.heartbeatIntervalMs = Int64(lease.heartbeatInterval.milliseconds)
        self.leaseMs = Int64(lease.lease.milliseconds)
    }
}

extension Moemesh_V1_ReplicaState {
    public init(_ state: ReplicaState) {
        self =
            switch state {
            case .serving: .serving
            case .draining: .draining
            }
    }
}

extension Moemesh_V1_HeartbeatResponse {
    public init(_ answer: HeartbeatAnswer) {
        self.init()
        self.known = answer.known
        if answer.known { self.state = Moemesh_V1_ReplicaState(answer.state) }
    }
}

extension Moemesh_V1_ReplicaLoad {
    public init(_ load: ReplicaLoad) {
        self.init()
        self.inFlightRows = Int64(load.inFlightRows)
        self.rowsPerSecond = load.rowsPerSecond
        self.latencyP50Ms = load.latencyP50Ms
        self.latencyP99Ms = load.latencyP99Ms
        self.rowsPerExpert = load.rowsPerExpert.map { Int64($0) }
    }
}

extension Moemesh_V1_Replica {
    public init(_ replica: Replica) {
        self.init()
        self.replicaID = replica.id
        self.endpoint = replica.endpoint
        self.group = replica.group
        self.experts = replica.experts.map(Moemesh_V1_ExpertKey.init)
        self.state = Moemesh_V1_ReplicaState(replica.state)
        self.device = replica.device
        self.instance = replica.instance
        self.unixSocket = replica.unixSocket
        self.hostID = replica.hostID
        self.precisions = replica.precisions.sorted { $0.key < $1.key }.map { address, precision in
            .with {
                $0.expert = Moemesh_V1_ExpertKey(address)
                $0.precision = precision
            }
        }
    }
}

extension Moemesh_V1_Topology {
    public init(_ topology: Topology) {
        self.init()
        self.version = topology.version
        self.replicas = topology.replicas.map(Moemesh_V1_Replica.init)
        self.startable = topology.startable.map(Moemesh_V1_ExpertKey.init)
        self.pruned = topology.pruned.map(Moemesh_V1_ExpertKey.init)
    }
}

extension Moemesh_V1_ScalingDecision {
    public init(_ decision: ScalingDecisionRecord) {
        self.init()
        self.atUnixMs = decision.atUnixMs
        self.group = decision.group
        self.fromReplicas = Int32(decision.from)
        self.toReplicas = Int32(decision.to)
        self.reason = decision.reason
    }
}

extension Moemesh_V1_CoordinatorStatus {
    public init(_ status: CoordinatorStatus) {
        self.init()
        self.modelType = status.modelType
        self.scaler = status.scaler
        self.autoscale = status.autoscale
        self.topologyVersion = status.topologyVersion
        self.coactivation = status.coactivation.sorted { $0.key < $1.key }.map { layer, counts in
            Moemesh_V1_LayerCoactivation(counts, layer: layer)
        }
        self.replicas = status.replicas.map { item in
            var replica = Moemesh_V1_ReplicaStatus()
            replica.replica = Moemesh_V1_Replica(item.replica)
            replica.load = Moemesh_V1_ReplicaLoad(item.load)
            replica.lastHeartbeatMs = Int64(item.sinceHeartbeat.milliseconds)
            replica.ejectedBy = item.ejectedBy
            replica.links = item.links
            return replica
        }
        self.groups = status.groups.map { item in
            var group = Moemesh_V1_ExpertGroupStatus()
            group.group = item.group
            group.experts = item.experts.map(Moemesh_V1_ExpertKey.init)
            group.desiredReplicas = Int32(item.desiredReplicas)
            group.servingReplicas = Int32(item.servingReplicas)
            group.demandRowsPerSecond = item.demandRowsPerSecond
            group.state = item.state
            return group
        }
        self.experts = status.experts.map { item in
            var expert = Moemesh_V1_ExpertLoad()
            expert.expert = Moemesh_V1_ExpertKey(item.expert)
            expert.demandRowsPerSecond = item.demandRowsPerSecond
            expert.servingReplicas = Int32(item.servingReplicas)
            expert.pruned = item.pruned
            return expert
        }
        self.decisions = status.decisions.map(Moemesh_V1_ScalingDecision.init)
        self.replicaBalancedness = status.replicaBalancedness
        self.routers = status.routers
    }
}

// The way back: a status read over the wire (`moemesh status`, `top`, `plan`) becomes the coordinator's own type, as
// an in-process coordinator answers it, so the views and the planner read one type.

extension ReplicaState {
    public init(_ state: Moemesh_V1_ReplicaState) {
        self = state == .draining ? .draining : .serving
    }
}

extension Replica {
    public init(_ message: Moemesh_V1_Replica) {
        self.init(
            id: message.replicaID, endpoint: message.endpoint, group: message.group,
            experts: message.experts.map(\.address), state: ReplicaState(message.state), device: message.device,
            instance: message.instance, unixSocket: message.unixSocket, hostID: message.hostID,
            precisions: Dictionary(
                message.precisions.map { ($0.expert.address, $0.precision) }, uniquingKeysWith: { _, last in last }))
    }
}

extension ScalingDecisionRecord {
    public init(_ message: Moemesh_V1_ScalingDecision) {
        self.init(
            atUnixMs: message.atUnixMs, group: message.group, from: Int(message.fromReplicas),
            to: Int(message.toReplicas), reason: message.reason)
    }
}

extension CoordinatorStatus {
    /// - Throws: `CoactivationError` for a malformed co-activation count.
    public init(_ message: Moemesh_V1_CoordinatorStatus) throws(CoactivationError) {
        var coactivation: [String: Coactivation] = [:]
        for layer in message.coactivation { coactivation[layer.layer] = try Coactivation(layer) }
        self.init(
            modelType: message.modelType, scaler: message.scaler, autoscale: message.autoscale,
            topologyVersion: message.topologyVersion,
            replicas: message.replicas.map {
                ReplicaStatus(
                    replica: Replica($0.replica), load: ReplicaLoad($0.load),
                    sinceHeartbeat: .milliseconds($0.lastHeartbeatMs), ejectedBy: $0.ejectedBy, links: $0.links)
            },
            groups: message.groups.map {
                GroupStatus(
                    group: $0.group, experts: $0.experts.map(\.address), desiredReplicas: Int($0.desiredReplicas),
                    servingReplicas: Int($0.servingReplicas), demandRowsPerSecond: $0.demandRowsPerSecond,
                    state: $0.state)
            },
            experts: message.experts.map {
                ExpertStatus(
                    expert: $0.expert.address, demandRowsPerSecond: $0.demandRowsPerSecond,
                    servingReplicas: Int($0.servingReplicas), pruned: $0.pruned)
            },
            decisions: message.decisions.map(ScalingDecisionRecord.init),
            replicaBalancedness: message.replicaBalancedness,
            routers: message.routers, coactivation: coactivation)
    }
}
