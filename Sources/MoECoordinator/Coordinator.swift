import Logging
import MoECore
import MoEModel
import MoEProto
import MoEServing
import MoEWire

/// The coordinator's state and decisions: the registry of expert replicas (leases kept by heartbeats), the
/// topology routers watch, the demand they report, scaling groups and their desired replicas, pruned experts,
/// drains, cold starts and the autoscaling loop (`tick`). Acts through an `ExpertScaler`.
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
        var lastHeartbeat: ContinuousClock.Instant
        var load = Moemesh_V1_ReplicaLoad()
        var drainingSince: ContinuousClock.Instant? = nil
        var heartbeatsSinceDrain = 0
        var retired = false
        /// Routers that ejected it, until when, and why.
        var ejections: [String: (until: ContinuousClock.Instant, reason: String)] = [:]
        /// How each router reaches it ("tcp HOST:PORT", "unix PATH"), from its latest report.
        var links: [String: String] = [:]

        var isServing: Bool { self.drainingSince == nil }
    }

    struct GroupRecord {
        let group: ScalingGroup
        var desired: Int
        var lastChange: ContinuousClock.Instant
        /// Whether the scaler can start its replicas.
        let startable: Bool
    }

    public let settings: Settings
    public let modelType: String
    public let hiddenSize: Int
    private let layers: [String: MoELayerSpec]
    private var scaler: any ExpertScaler = StaticScaler()
    private let policy: AutoscalePolicy?
    private let logger: Logger
    private let startedAt = ContinuousClock.now
    /// Prometheus series (see `ServiceMetrics`).
    public let metrics = ServiceMetrics()

    private var replicas: [String: ReplicaRecord] = [:]
    private var groups: [String: GroupRecord] = [:]
    private var pruned: Set<ExpertAddress> = []
    private var demand: DemandWindow
    private var decisions: [Moemesh_V1_ScalingDecision] = []
    private var version: UInt64 = 1
    private var topologyReady = false
    private var lastPolicyRun = ContinuousClock.now
    private var watchers: [Int: (router: String, continuation: AsyncStream<Moemesh_V1_Topology>.Continuation)] = [:]
    /// Tasks waiting until experts are served (`waitUntilCovered`), by id.
    private var coverageWaiters: [Int: (experts: [ExpertAddress], continuation: CheckedContinuation<Void, Never>)] = [:]
    private var nextWatcher = 0
    private var routersSeen: [String: ContinuousClock.Instant] = [:]
    private var closed = false
    private var autoscalePaused = false

    /// Decisions kept for the status.
    static let decisionLog = 50

    public init(checkpoint: MoECheckpoint, settings: Settings, logger: Logger) {
        self.settings = settings
        self.modelType = checkpoint.modelType
        self.hiddenSize = checkpoint.hiddenSize
        self.layers = Dictionary(uniqueKeysWithValues: checkpoint.layers.map { ($0.name, $0) })
        self.policy = settings.autoscale.map(AutoscalePolicy.init(settings:))
        self.logger = logger
        self.demand = DemandWindow(window: settings.demandWindow)
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

    // MARK: Registry

    public func register(_ request: Moemesh_V1_RegisterRequest) throws(CoordinatorError) -> Moemesh_V1_RegisterResponse
    {
        guard ServiceEndpoint(request.endpoint) != nil else {
            throw .invalidRequest("endpoint: expected HOST:PORT, got '\(request.endpoint)'")
        }
        guard !request.group.isEmpty else { throw .invalidRequest("group: expected a name, got an empty string") }
        guard request.modelType == self.modelType, Int(request.hiddenSize) == self.hiddenSize else {
            throw .invalidRequest(
                "model: expected \(self.modelType) with hidden size \(self.hiddenSize), "
                    + "got \(request.modelType) with hidden size \(request.hiddenSize)")
        }
        let experts = request.experts.map(\.address)
        guard !experts.isEmpty else { throw .invalidRequest("experts: expected at least one, got none") }
        if let unknown = experts.first(where: { !self.isExpert($0) }) { throw .unknownExpert(unknown) }

        let now = ContinuousClock.now
        for (id, record) in self.replicas where record.endpoint == request.endpoint {
            self.replicas[id] = nil
        }
        let id = "r-" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        self.replicas[id] = ReplicaRecord(
            id: id, endpoint: request.endpoint, group: request.group, experts: experts, device: request.device,
            instance: request.instance, unixSocket: request.unixSocket, hostID: request.hostID, lastHeartbeat: now)
        if self.groups[request.group] == nil {
            self.groups[request.group] = GroupRecord(
                group: ScalingGroup(name: request.group, selection: request.group, experts: experts), desired: 0,
                lastChange: now, startable: false)
        }
        self.followRegistry(group: request.group)
        self.logger.info(
            "replica registered",
            metadata: [
                "replica": "\(id)", "endpoint": "\(request.endpoint)", "group": "\(request.group)",
                "experts": "\(experts.count)",
            ])
        self.changed()
        var response = Moemesh_V1_RegisterResponse()
        response.replicaID = id
        response.heartbeatIntervalMs = Int64(self.settings.heartbeatInterval.milliseconds)
        response.leaseMs = Int64(self.settings.lease.milliseconds)
        return response
    }

    public func heartbeat(_ request: Moemesh_V1_HeartbeatRequest) -> Moemesh_V1_HeartbeatResponse {
        var response = Moemesh_V1_HeartbeatResponse()
        guard var record = self.replicas[request.replicaID] else { return response }
        record.lastHeartbeat = .now
        record.load = request.load
        if record.drainingSince != nil { record.heartbeatsSinceDrain += 1 }
        self.replicas[request.replicaID] = record
        response.known = true
        response.state = record.isServing ? .serving : .draining
        return response
    }

    public func deregister(_ id: String) {
        guard let record = self.replicas.removeValue(forKey: id) else { return }
        self.logger.info("replica deregistered", metadata: ["replica": "\(id)", "endpoint": "\(record.endpoint)"])
        self.followRegistry(group: record.group)
        self.changed()
    }

    /// Groups no scaler runs follow what registers.
    private func followRegistry(group name: String) {
        guard var group = self.groups[name], !group.startable else { return }
        group.desired = self.replicas.values.filter { $0.group == name && $0.isServing }.count
        self.groups[name] = group
    }

    private func isExpert(_ address: ExpertAddress) -> Bool {
        guard let layer = self.layers[address.layer] else { return false }
        return address.isShared ? layer.sharedExpert != nil : (0..<layer.numExperts).contains(address.expert)
    }

    // MARK: Topology

    /// The topology now, then each change (the newest only, if the watcher is slow). Nothing is sent until the
    /// coordinator has warmed up.
    public func watch(router: String) -> AsyncStream<Moemesh_V1_Topology> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: Moemesh_V1_Topology.self, bufferingPolicy: .bufferingNewest(1))
        guard !self.closed else {
            continuation.finish()
            return stream
        }
        let id = self.nextWatcher
        self.nextWatcher += 1
        self.watchers[id] = (router, continuation)
        self.routersSeen[router] = .now
        // Termination handlers are synchronous: a task hops onto the actor.
        continuation.onTermination = { _ in Task { await self.stopWatching(id) } }
        if self.topologyReady { continuation.yield(self.topology()) }
        self.logger.info("router watching the topology", metadata: ["router": "\(router)"])
        return stream
    }

    /// Ends every topology stream (the coordinator is stopping; routers resubscribe to its successor).
    public func closeWatchers() {
        self.closed = true
        for watcher in self.watchers.values { watcher.continuation.finish() }
        self.watchers = [:]
    }

    private func stopWatching(_ id: Int) {
        if let watcher = self.watchers.removeValue(forKey: id) {
            self.logger.info("router stopped watching", metadata: ["router": "\(watcher.router)"])
        }
    }

    public func topology() -> Moemesh_V1_Topology {
        var topology = Moemesh_V1_Topology()
        topology.version = self.version
        topology.replicas = self.replicas.values.sorted { $0.id < $1.id }.map(Self.replicaMessage)
        let served = Set(self.replicas.values.filter(\.isServing).flatMap(\.experts))
        topology.startable = Set(self.groups.values.filter(\.startable).flatMap(\.group.experts))
            .subtracting(served).sorted().map(Moemesh_V1_ExpertKey.init)
        topology.pruned = self.pruned.sorted().map(Moemesh_V1_ExpertKey.init)
        return topology
    }

    private static func replicaMessage(_ record: ReplicaRecord) -> Moemesh_V1_Replica {
        var replica = Moemesh_V1_Replica()
        replica.replicaID = record.id
        replica.endpoint = record.endpoint
        replica.group = record.group
        replica.experts = record.experts.map(Moemesh_V1_ExpertKey.init)
        replica.state = record.isServing ? .serving : .draining
        replica.device = record.device
        replica.instance = record.instance
        replica.unixSocket = record.unixSocket
        replica.hostID = record.hostID
        return replica
    }

    /// A change: a new version, sent to every watcher; waiters whose experts are now served are woken.
    private func changed() {
        self.version += 1
        for (id, waiter) in self.coverageWaiters where self.covers(waiter.experts) {
            self.coverageWaiters[id] = nil
            waiter.continuation.resume()
        }
        guard self.topologyReady else { return }
        let topology = self.topology()
        for watcher in self.watchers.values { watcher.continuation.yield(topology) }
    }

    // MARK: Demand, cold start, admin

    public func reportDemand(_ report: Moemesh_V1_DemandReport) {
        let now = ContinuousClock.now
        self.routersSeen[report.routerID] = now
        for item in report.demand {
            let address = item.expert.address
            guard self.isExpert(address) else { continue }
            self.demand.record(address, rows: Int(item.rows), at: now)
        }
        // A router that ejected a replica (unreachable from it, or far slower than its peers) says so before the
        // replica's lease runs out: the status shows it; the lease alone decides whether it stays in the topology,
        // since another router may still reach it.
        for ejection in report.ejections {
            guard let id = self.replicas.first(where: { $0.value.endpoint == ejection.endpoint })?.key else { continue }
            self.replicas[id]!.ejections[report.routerID] = (now + .milliseconds(ejection.durationMs), ejection.reason)
            self.logger.warning(
                "a router ejected a replica",
                metadata: [
                    "router": "\(report.routerID)", "replica": "\(id)", "endpoint": "\(ejection.endpoint)",
                    "reason": "\(ejection.reason)", "for_ms": "\(ejection.durationMs)",
                ])
        }
        let links = Dictionary(
            report.links.map { ($0.endpoint, $0.transport) }, uniquingKeysWith: { first, _ in first })
        for id in self.replicas.keys {
            self.replicas[id]!.links[report.routerID] = links[self.replicas[id]!.endpoint]
        }
    }

    /// Starts a replica of every expert in `addresses` that has none serving; returns once asked (see `covers`).
    public func ensure(_ addresses: [ExpertAddress], reason: String) async throws(CoordinatorError) {
        if let unknown = addresses.first(where: { !self.isExpert($0) }) { throw .unknownExpert(unknown) }
        let missing = addresses.filter { !self.covers([$0]) }
        var toStart: [String: [ExpertAddress]] = [:]
        for address in missing {
            let candidates = self.groups.values.filter { $0.startable && $0.group.experts.contains(address) }
            // A group already asked for replicas is starting; otherwise the smallest group that hosts it.
            if candidates.contains(where: { $0.desired > 0 }) { continue }
            guard
                let group = candidates.min(by: {
                    ($0.group.experts.count, $0.group.name) < ($1.group.experts.count, $1.group.name)
                })
            else {
                throw .cannotStart(
                    [address],
                    reason: self.scaler.canStart
                        ? "no scaling group hosts it" : "no replica hosts it and the coordinator runs without a scaler")
            }
            toStart[group.group.name, default: []].append(address)
        }
        for (name, wanted) in toStart.sorted(by: { $0.key < $1.key }) {
            let decision = AutoscalePolicy.Decision(
                group: name, from: 0, to: 1,
                reason:
                    "cold start: \(wanted.map(\.description).joined(separator: ", ")) requested\(reason.isEmpty ? "" : " (\(reason))")"
            )
            await self.apply(decision)
        }
    }

    /// Returns once every expert in `addresses` has a serving replica (at once if they have), or when the task is
    /// cancelled.
    public func waitUntilCovered(_ addresses: [ExpertAddress]) async {
        guard !self.covers(addresses) else { return }
        let id = self.nextWatcher
        self.nextWatcher += 1
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                if Task.isCancelled { return continuation.resume() }
                self.coverageWaiters[id] = (addresses, continuation)
            }
        } onCancel: {
            Task { await self.stopWaiting(id) }  // cancellation handlers are synchronous: a hop onto the actor
        }
    }

    private func stopWaiting(_ id: Int) {
        self.coverageWaiters.removeValue(forKey: id)?.continuation.resume()
    }

    /// Whether every expert in `addresses` has a serving replica.
    public func covers(_ addresses: [ExpertAddress]) -> Bool {
        let served = Set(self.replicas.values.filter(\.isServing).flatMap(\.experts))
        return addresses.allSatisfy(served.contains)
    }

    public func setPruned(_ address: ExpertAddress, pruned: Bool) throws(CoordinatorError) -> [ExpertAddress] {
        guard self.isExpert(address) else { throw .unknownExpert(address) }
        guard !address.isShared else {
            throw .invalidRequest(
                "\(address): a shared expert sees every token and is not routed; only routed experts can be pruned")
        }
        if pruned {
            let layer = self.layers[address.layer]!
            let remaining =
                layer.numExperts - self.pruned.filter { $0.layer == address.layer }.count
                - (self.pruned.contains(address) ? 0 : 1)
            guard remaining >= layer.topK else {
                throw .tooFewExperts(layer: address.layer, remaining: remaining, topK: layer.topK)
            }
            self.pruned.insert(address)
        } else {
            self.pruned.remove(address)
        }
        self.logger.notice(
            pruned ? "expert pruned from routing" : "expert restored to routing", metadata: ["expert": "\(address)"])
        self.record(
            AutoscalePolicy.Decision(
                group: address.description, from: 0, to: 0,
                reason: pruned ? "admin: pruned from routing" : "admin: restored to routing"))
        self.changed()
        return self.pruned.sorted()
    }

    /// Drains `id` (routers stop sending it work) and stops it once it has finished what it has.
    public func drain(replica id: String, reason: String) throws(CoordinatorError) -> Moemesh_V1_Replica {
        guard var record = self.replicas[id] else { throw .unknownReplica(id) }
        if record.isServing, var group = self.groups[record.group], group.startable {
            group.desired = max(0, group.desired - 1)
            group.lastChange = .now
            self.groups[record.group] = group
            self.record(
                AutoscalePolicy.Decision(
                    group: record.group, from: group.desired + 1, to: group.desired,
                    reason: "\(reason): drain \(record.endpoint)"))
        }
        if record.isServing {
            record.drainingSince = .now
            self.replicas[id] = record
            self.logger.notice(
                "draining replica",
                metadata: ["replica": "\(id)", "endpoint": "\(record.endpoint)", "reason": "\(reason)"])
            self.changed()
        }
        return Self.replicaMessage(record)
    }

    // MARK: The loop

    /// Expires leases, ends the warm-up, stops drained replicas and runs the autoscaling policy when due, as of
    /// `now` (later instants let tests skip ahead).
    public func tick(at now: ContinuousClock.Instant = .now) async {
        for (id, record) in self.replicas where now - record.lastHeartbeat > self.settings.lease {
            self.replicas[id] = nil
            self.logger.warning(
                "replica lease expired; removed", metadata: ["replica": "\(id)", "endpoint": "\(record.endpoint)"])
            self.followRegistry(group: record.group)
            self.changed()
        }
        if !self.topologyReady && (now - self.startedAt >= self.settings.warmUp || self.everyGroupUp()) {
            self.topologyReady = true
            self.changed()
        }
        for (id, record) in self.replicas {
            guard let since = record.drainingSince, !record.retired else { continue }
            let finished = record.heartbeatsSinceDrain >= 2 && record.load.inFlightRows == 0
            guard finished || now - since >= self.settings.drainTimeout else { continue }
            self.replicas[id]?.retired = true
            let leaving = self.groups[record.group]?.desired ?? 0
            guard let group = self.groups[record.group]?.group else { continue }
            do {
                try await self.scaler.retire(
                    RetiringReplica(endpoint: record.endpoint, instance: record.instance), leaving: leaving, of: group)
                self.logger.info(
                    "drained replica stopped", metadata: ["replica": "\(id)", "endpoint": "\(record.endpoint)"])
            } catch {
                self.logger.error(
                    "could not stop a drained replica", metadata: ["replica": "\(id)", "error": "\(error)"])
            }
        }
        self.recordGauges(at: now)
        if let policy = self.policy, self.topologyReady, !self.autoscalePaused,
            now - self.lastPolicyRun >= self.settings.policyInterval
        {
            self.lastPolicyRun = now
            for decision in policy.decide(self.groupLoads(at: now)) { await self.apply(decision) }
        }
    }

    /// Replicas (serving, draining), desired replicas and demand of each group.
    private func recordGauges(at now: ContinuousClock.Instant) {
        for group in self.groups.values {
            let name = group.group.name
            let members = self.replicas.values.filter { $0.group == name }
            self.metrics.gauge("moemesh_coordinator_replicas", [("group", name), ("state", "serving")])
                .record(members.filter(\.isServing).count)
            self.metrics.gauge("moemesh_coordinator_replicas", [("group", name), ("state", "draining")])
                .record(members.filter { !$0.isServing }.count)
            self.metrics.gauge("moemesh_coordinator_desired_replicas", [("group", name)]).record(group.desired)
            self.metrics.gauge("moemesh_coordinator_demand_rows_per_second", [("group", name)])
                .record(self.rowsPerSecond(group.group, at: now))
        }
    }

    /// Holds the autoscaling policy (the registry, cold starts and admin actions go on).
    public func pauseAutoscaling(_ paused: Bool) {
        self.autoscalePaused = paused
    }

    private func everyGroupUp() -> Bool {
        let startable = self.groups.values.filter(\.startable)
        return !startable.isEmpty
            && startable.allSatisfy { group in
                self.replicas.values.filter { $0.group == group.group.name && $0.isServing }.count >= group.desired
            }
    }

    func groupLoads(at now: ContinuousClock.Instant) -> [AutoscalePolicy.GroupLoad] {
        self.groups.values.filter(\.startable).sorted { $0.group.name < $1.group.name }.map { group in
            let lastDemand = group.group.experts.compactMap { self.demand.lastDemand[$0] }.max() ?? group.lastChange
            return AutoscalePolicy.GroupLoad(
                group: group.group.name, replicas: group.desired,
                rowsPerSecond: self.rowsPerSecond(group.group, at: now),
                idleFor: now - max(lastDemand, group.lastChange), sinceChange: now - group.lastChange)
        }
    }

    private func rowsPerSecond(_ group: ScalingGroup, at now: ContinuousClock.Instant) -> Double {
        group.experts.reduce(0) { $0 + self.demand.rowsPerSecond($1, at: now) }
    }

    /// Carries out one decision: more replicas through the scaler; fewer by draining the least busy first.
    func apply(_ decision: AutoscalePolicy.Decision) async {
        guard var group = self.groups[decision.group] else { return }
        self.logger.notice(
            "scaling",
            metadata: [
                "group": "\(decision.group)", "from": "\(decision.from)", "to": "\(decision.to)",
                "reason": "\(decision.reason)",
            ])
        self.record(decision)
        group.desired = decision.to
        group.lastChange = .now
        self.groups[decision.group] = group
        if decision.to > decision.from {
            do {
                try await self.scaler.setReplicas(decision.to, of: group.group)
            } catch {
                self.logger.error(
                    "scaler could not start replicas", metadata: ["group": "\(decision.group)", "error": "\(error)"])
            }
        } else {
            let serving = self.replicas.values.filter { $0.group == decision.group && $0.isServing }
                .sorted {
                    ($0.load.inFlightRows, $0.load.rowsPerSecond, $0.id) < (
                        $1.load.inFlightRows, $1.load.rowsPerSecond, $1.id
                    )
                }
            for record in serving.prefix(max(0, serving.count - decision.to)) {
                self.replicas[record.id]?.drainingSince = .now
            }
            self.changed()
        }
    }

    private func record(_ decision: AutoscalePolicy.Decision) {
        var entry = Moemesh_V1_ScalingDecision()
        entry.atUnixMs = WallClock.unixMilliseconds()
        entry.group = decision.group
        entry.fromReplicas = Int32(decision.from)
        entry.toReplicas = Int32(decision.to)
        entry.reason = decision.reason
        self.decisions.append(entry)
        let direction = decision.to > decision.from ? "up" : decision.to < decision.from ? "down" : "admin"
        self.metrics.counter("moemesh_coordinator_scaling_decisions_total", [("direction", direction)]).increment()
        if self.decisions.count > Self.decisionLog {
            self.decisions.removeFirst(self.decisions.count - Self.decisionLog)
        }
    }

    // MARK: Status

    public func status() -> Moemesh_V1_CoordinatorStatus {
        let now = ContinuousClock.now
        var status = Moemesh_V1_CoordinatorStatus()
        status.modelType = self.modelType
        status.scaler = self.scaler.name
        status.autoscale = self.policy != nil
        status.topologyVersion = self.version
        let records = self.replicas.values.sorted { ($0.group, $0.id) < ($1.group, $1.id) }
        status.replicas = records.map { record in
            var replica = Moemesh_V1_ReplicaStatus()
            replica.replica = Self.replicaMessage(record)
            replica.load = record.load
            replica.lastHeartbeatMs = Int64((now - record.lastHeartbeat).milliseconds)
            replica.ejectedBy = record.ejections.filter { $0.value.until > now }.sorted { $0.key < $1.key }
                .map { "\($0.key): \($0.value.reason)" }
            replica.links = record.links.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }
            return replica
        }
        let minimum = self.settings.autoscale?.minRowsPerSecond ?? 1
        status.groups = self.groups.values.sorted { $0.group.name < $1.group.name }.map { group in
            let members = records.filter { $0.group == group.group.name }
            let serving = members.filter(\.isServing).count
            let rate = self.rowsPerSecond(group.group, at: now)
            var entry = Moemesh_V1_ExpertGroupStatus()
            entry.group = group.group.name
            entry.experts = group.group.experts.map(Moemesh_V1_ExpertKey.init)
            entry.desiredReplicas = Int32(group.desired)
            entry.servingReplicas = Int32(serving)
            entry.demandRowsPerSecond = rate
            entry.state =
                if serving < group.desired { "starting" } else if members.contains(where: { !$0.isServing }) {
                    "draining"
                } else if group.desired == 0 && serving == 0 { "scaled to zero" } else if rate < minimum { "idle" } else
                { "active" }
            return entry
        }
        let servingByExpert = Dictionary(grouping: records.filter(\.isServing).flatMap(\.experts), by: { $0 })
            .mapValues(\.count)
        status.experts = self.layers.values.flatMap(\.expertAddresses).sorted().map { address in
            var entry = Moemesh_V1_ExpertLoad()
            entry.expert = Moemesh_V1_ExpertKey(address)
            entry.demandRowsPerSecond = self.demand.rowsPerSecond(address, at: now)
            entry.servingReplicas = Int32(servingByExpert[address] ?? 0)
            entry.pruned = self.pruned.contains(address)
            return entry
        }
        status.decisions = self.decisions
        status.replicaBalancedness = AutoscalePolicy.balancedness(records.filter(\.isServing).map(\.load.rowsPerSecond))
        status.routers = self.routersSeen.filter { now - $0.value < .seconds(10) }.keys.sorted()
        return status
    }
}
