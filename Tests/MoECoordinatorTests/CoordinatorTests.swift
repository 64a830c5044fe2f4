import CoreMetrics
import GRPCCore
import Logging
import MoECoordinator
import MoECore
import MoEModel
import MoEProto
import MoEServing
import MoEStatusViews
import MoETestSupport
import MoEWire
import Prometheus
import Synchronization
import Testing

/// A scaler that records what it is asked.
final class RecordingScaler: ExpertScaler {
    let groups: [ScalingGroup]
    let calls = Mutex<[String]>([])

    init(groups: [ScalingGroup]) { self.groups = groups }

    var name: String { "recording" }
    var canStart: Bool { true }
    func initialGroups() async throws -> [(group: ScalingGroup, replicas: Int)] { self.groups.map { ($0, 1) } }
    func setReplicas(_ replicas: Int, of group: ScalingGroup) async throws {
        self.calls.withLock { $0.append("set \(group) \(replicas)") }
    }
    func retire(_ replica: RetiringReplica, leaving replicas: Int, of group: ScalingGroup) async throws {
        self.calls.withLock { $0.append("retire \(replica.instance) leaving \(group) \(replicas)") }
    }
    func run() async throws {}
}

@Suite("coordinator registry, topology, drain, cold start, prune")
struct CoordinatorTests {
    static let shape = ModelSynthesizer.Shape(experts: 4, topK: 2, hiddenSize: 16, intermediateSize: 24, layers: 2)

    static func registration(
        _ endpoint: String, group: String, experts: [ExpertAddress], model: String = "mixtral", hidden: Int = 16
    ) -> ReplicaRegistration {
        ReplicaRegistration(
            endpoint: endpoint, group: group, experts: experts, modelType: model, hiddenSize: hidden,
            instance: "pid-\(endpoint)")
    }

    static func withCoordinator(
        settings: Coordinator.Settings = .init(warmUp: .zero),
        _ body: (Coordinator, SmallModel, MoECheckpoint) async throws -> Void
    ) async throws {
        let model = try SmallModel(shape: Self.shape, seed: 5)
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let coordinator = Coordinator(checkpoint: checkpoint, settings: settings, logger: Logger(label: "test"))
        try await body(coordinator, model, checkpoint)
    }

    @Test("a group only registrations made leaves the status and /metrics once its last replica is gone")
    func goneGroupsLeaveTheMetrics() async throws {
        let registry = PrometheusCollectorRegistry()
        try await withMetricsFactory(PrometheusMetricsFactory(registry: registry)) {
            try await Self.withCoordinator { coordinator, _, _ in
                let replica = try await coordinator.register(
                    Self.registration(
                        "127.0.0.1:4100", group: "by-hand", experts: [ExpertAddress(layer: "0", expert: 2)]))
                _ = try await coordinator.register(
                    Self.registration("127.0.0.1:4101", group: "stays", experts: [ExpertAddress(layer: "0", expert: 3)])
                )
                await coordinator.tick()
                #expect(registry.emitToString().contains(#"group="by-hand""#))
                await coordinator.deregister(replica.replicaID)
                await coordinator.tick()
                #expect(await !coordinator.status().groups.map(\.group).contains("by-hand"))
                #expect(!registry.emitToString().contains(#"group="by-hand""#))
                #expect(registry.emitToString().contains(#"moemesh_coordinator_desired_replicas{group="stays"}"#))
            }
        }
    }

    @Test("registrations that do not fit the model are refused with what was expected and what came")
    func refusesBadRegistrations() async throws {
        try await Self.withCoordinator { coordinator, _, _ in
            let expert = ExpertAddress(layer: "0", expert: 1)
            await #expect(
                throws: CoordinatorError.invalidRequest(
                    "model: expected mixtral with hidden size 16, got qwen2_moe with hidden size 16")
            ) {
                try await coordinator.register(
                    Self.registration("127.0.0.1:1", group: "g", experts: [expert], model: "qwen2_moe"))
            }
            await #expect(throws: CoordinatorError.unknownExpert(ExpertAddress(layer: "0", expert: 9))) {
                try await coordinator.register(
                    Self.registration("127.0.0.1:1", group: "g", experts: [ExpertAddress(layer: "0", expert: 9)]))
            }
            await #expect(throws: CoordinatorError.invalidRequest("endpoint: expected HOST:PORT, got 'nowhere'")) {
                try await coordinator.register(Self.registration("nowhere", group: "g", experts: [expert]))
            }
            await #expect(throws: CoordinatorError.invalidRequest("experts: expected at least one, got none")) {
                try await coordinator.register(Self.registration("127.0.0.1:1", group: "g", experts: []))
            }
            let error = CoordinatorError.unknownExpert(ExpertAddress(layer: "0", expert: 9))
            #expect(error.rpcErrorCode == .notFound)
            #expect(await coordinator.topology().replicas.isEmpty)
        }
    }

    @Test("a replica of another model's weights (its gate probes differ) is refused; the same model's is taken")
    func refusesOtherWeights() async throws {
        try await Self.withCoordinator { coordinator, _, checkpoint in
            let expert = ExpertAddress(layer: "0", expert: 1)
            let other = try SmallModel(shape: Self.shape, seed: 6)
            defer { other.remove() }
            var registration = Self.registration("127.0.0.1:1", group: "g", experts: [expert])
            registration.gateProbes = try GateProbes(checkpoint: MoECheckpoint(path: other.path))
            await #expect {
                try await coordinator.register(registration)
            } throws: { error in
                guard case .invalidRequest(let message) = error as? CoordinatorError else { return false }
                return message.hasPrefix("model: layer 0: the replica's gate weights differ")
                    && message.hasSuffix("expected a replica of the model this coordinator serves")
            }
            registration.gateProbes = try GateProbes(checkpoint: checkpoint)
            _ = try await coordinator.register(registration)
            #expect(await coordinator.topology().replicas.count == 1)
        }
    }

    @Test("names are bounded: a 1 MiB group, a newline in a group, a quote in an instance are refused saying so")
    func boundedNames() async throws {
        try await Self.withCoordinator { coordinator, _, _ in
            let expert = ExpertAddress(layer: "0", expert: 1)
            await #expect(throws: CoordinatorError.invalidRequest("group: expected at most 256 bytes, got 1048576")) {
                try await coordinator.register(
                    Self.registration("127.0.0.1:1", group: String(repeating: "g", count: 1 << 20), experts: [expert]))
            }
            await #expect(
                throws: CoordinatorError.invalidRequest(
                    #"group: expected letters, digits and * : , . _ -, got U+000A in "*:1\nforged log line""#)
            ) {
                try await coordinator.register(
                    Self.registration("127.0.0.1:1", group: "*:1\nforged log line", experts: [expert]))
            }
            var quoted = Self.registration("127.0.0.1:1", group: "*:1", experts: [expert])
            quoted.instance = "pod\"1"
            await #expect(
                throws: CoordinatorError.invalidRequest(
                    #"instance: expected letters, digits and : , . _ - / @ = [ ], got U+0022 in "pod\"1""#)
            ) {
                try await coordinator.register(quoted)
            }
            #expect(await coordinator.topology().replicas.isEmpty)
            // What real replicas send is taken: a selection, a pid, a device, a host identity.
            var real = Self.registration("127.0.0.1:1", group: "encoder.1:0-3,decoder.0:*", experts: [expert])
            real.device = "cuda:0"
            real.hostID = "072596b1-4364-4925-ad68-6d707161bae0:net:[4026531833]:mnt:[4026531841]"
            _ = try await coordinator.register(real)
        }
    }

    @Test("a group only registrations made is forgotten once its last replica's lease expires")
    func registeredGroupsAreForgotten() async throws {
        let lease = Duration.seconds(3)
        try await Self.withCoordinator(settings: .init(lease: lease, warmUp: .zero)) { coordinator, _, _ in
            _ = try await coordinator.register(
                Self.registration("127.0.0.1:1", group: "by-hand", experts: [ExpertAddress(layer: "0", expert: 1)]))
            #expect(await coordinator.status().groups.map(\.group) == ["by-hand"])
            await coordinator.tick(at: .now + lease * 2)
            #expect(await coordinator.status().groups.isEmpty)
        }
    }

    @Test("the topology stream sends each change; a missed lease removes a replica; re-registering replaces")
    func leasesAndTopology() async throws {
        let lease = Duration.seconds(3)
        try await Self.withCoordinator(settings: .init(lease: lease, warmUp: .zero)) { coordinator, _, _ in
            await coordinator.tick()
            let stream = await coordinator.watch(router: "r1")
            var updates = stream.makeAsyncIterator()
            #expect(await updates.next()?.replicas.count == 0)
            let all = (0..<4).map { ExpertAddress(layer: "0", expert: $0) }
            let first = try await coordinator.register(Self.registration("127.0.0.1:1001", group: "a", experts: all))
            #expect(await updates.next()?.replicas.map(\.id) == [first.replicaID])
            let second = try await coordinator.register(Self.registration("127.0.0.1:1001", group: "a", experts: all))
            #expect(await updates.next()?.replicas.map(\.id) == [second.replicaID])
            #expect(await coordinator.heartbeat(replicaID: first.replicaID, load: ReplicaLoad()).known == false)
            // A heartbeat keeps the lease for `lease` from then on; silence beyond it loses the replica.
            #expect(await coordinator.heartbeat(replicaID: second.replicaID, load: ReplicaLoad()).known)
            let heartbeat = ContinuousClock.now
            await coordinator.tick(at: heartbeat + lease - .milliseconds(500))
            #expect(await coordinator.covers(all))
            await coordinator.tick(at: heartbeat + lease + .milliseconds(500))
            #expect(await updates.next()?.replicas.isEmpty == true)
            #expect(await !coordinator.covers(all))
            #expect(await coordinator.heartbeat(replicaID: second.replicaID, load: ReplicaLoad()).known == false)
        }
    }

    @Test("a restarted coordinator sends no topology until replicas have had time to register again")
    func warmUp() async throws {
        let warmUp = Duration.seconds(10)
        try await Self.withCoordinator(settings: .init(lease: .seconds(60), warmUp: warmUp)) { coordinator, _, _ in
            let started = ContinuousClock.now
            let stream = await coordinator.watch(router: "r1")
            _ = try await coordinator.register(
                Self.registration("127.0.0.1:1001", group: "a", experts: [ExpertAddress(layer: "0", expert: 0)]))
            let first = Task { await stream.first { _ in true } }
            await coordinator.tick()
            try await Task.sleep(for: .milliseconds(100))
            // Nothing yet: a topology sent now could tell routers the mesh is smaller than it is.
            _ = try await coordinator.register(
                Self.registration("127.0.0.1:1002", group: "a", experts: [ExpertAddress(layer: "0", expert: 1)]))
            await coordinator.tick(at: started + warmUp + .milliseconds(1))
            #expect(await first.value?.replicas.count == 2)
        }
    }

    @Test("drain: the replica leaves routing at once, is stopped once it reports nothing in flight")
    func drain() async throws {
        try await Self.withCoordinator { coordinator, _, checkpoint in
            let groups = ScalingGroup.perExpertIndex(layers: checkpoint.layers)
            let scaler = RecordingScaler(groups: groups)
            try await coordinator.start(scaler: scaler)
            #expect(scaler.calls.withLock { $0.count } == 4)
            let a = try await coordinator.register(
                Self.registration("127.0.0.1:1001", group: "*:0", experts: groups[0].experts))
            let b = try await coordinator.register(
                Self.registration("127.0.0.1:1002", group: "*:0", experts: groups[0].experts))
            let drained = try await coordinator.drain(replica: a.replicaID, reason: "admin")
            #expect(drained.state == .draining)
            let topology = await coordinator.topology()
            #expect(topology.replicas.first { $0.id == a.replicaID }?.state == .draining)
            #expect(topology.replicas.first { $0.id == b.replicaID }?.state == .serving)
            // Still busy: not stopped.
            for _ in 0..<3 {
                _ = await coordinator.heartbeat(replicaID: a.replicaID, load: ReplicaLoad(inFlightRows: 5))
                await coordinator.tick()
            }
            #expect(!scaler.calls.withLock { $0.contains { $0.hasPrefix("retire") } })
            _ = await coordinator.heartbeat(replicaID: a.replicaID, load: ReplicaLoad(inFlightRows: 0))
            await coordinator.tick()
            #expect(scaler.calls.withLock { $0.last } == "retire pid-127.0.0.1:1001 leaving *:0 0")
            await #expect(throws: CoordinatorError.unknownReplica("nope")) {
                try await coordinator.drain(replica: "nope", reason: "admin")
            }
        }
    }

    @Test(
        "apply a plan: refused when it does not fit the model; otherwise new groups start, old ones drain only once the new serve, then are forgotten"
    )
    func applyPlan() async throws {
        try await Self.withCoordinator { coordinator, _, checkpoint in
            let groups = ScalingGroup.perExpertIndex(layers: checkpoint.layers)
            let scaler = RecordingScaler(groups: groups)
            try await coordinator.start(scaler: scaler)
            var old: [String] = []
            for (index, group) in groups.enumerated() {
                old.append(
                    try await coordinator.register(
                        Self.registration("127.0.0.1:\(2000 + index)", group: group.name, experts: group.experts)
                    ).replicaID)
            }
            func address(_ layer: String, _ expert: Int) -> ExpertAddress {
                ExpertAddress(layer: layer, expert: expert)
            }
            func pairs(_ layer: String) -> [(group: ScalingGroup, replicas: Int)] {
                [
                    (
                        ScalingGroup(
                            name: "l\(layer)-a", selection: "", experts: [address(layer, 0), address(layer, 3)]), 1
                    ),
                    (
                        ScalingGroup(
                            name: "l\(layer)-b", selection: "", experts: [address(layer, 1), address(layer, 2)]), 1
                    ),
                ]
            }
            await #expect(
                throws: CoordinatorError.invalidRequest(
                    "the plan hosts no replica of layer 1 expert 0, layer 1 expert 1, layer 1 expert 2, layer 1 expert 3; every expert needs a group"
                )
            ) { try await coordinator.applyPlan(pairs("0"), timeout: .seconds(1)) }
            await #expect(throws: CoordinatorError.unknownExpert(address("0", 7))) {
                try await coordinator.applyPlan(
                    [(ScalingGroup(name: "x", selection: "", experts: [address("0", 7)]), 1)], timeout: .seconds(1))
            }
            await #expect(
                throws: CoordinatorError.invalidRequest(
                    "group *:0: already runs '*:0', the plan gives it '0:1'; give the new group another name")
            ) {
                try await coordinator.applyPlan(
                    [(ScalingGroup(name: "*:0", selection: "0:1", experts: [address("0", 1)]), 1)] + pairs("0")
                        + pairs("1"), timeout: .seconds(1))
            }
            // Nobody registers for the new groups: the plan times out and the old groups keep serving.
            let refused = await #expect(throws: CoordinatorError.self) {
                try await coordinator.applyPlan(pairs("0") + pairs("1"), timeout: .milliseconds(200))
            }
            #expect(refused?.rpcErrorCode == .failedPrecondition)
            #expect(await coordinator.topology().replicas.allSatisfy { $0.state == .serving })
            // Now the new groups' replicas register while the plan waits; then every old replica drains.
            let apply = Task { try await coordinator.applyPlan(pairs("0") + pairs("1"), timeout: .seconds(30)) }
            for (index, (group, _)) in (pairs("0") + pairs("1")).enumerated() {
                _ = try await coordinator.register(
                    Self.registration("127.0.0.1:\(3000 + index)", group: group.name, experts: group.experts))
            }
            let applied = try await apply.value
            #expect(applied.started.isEmpty)  // started by the timed-out attempt, kept now
            #expect(applied.kept.sorted() == ["l0-a", "l0-b", "l1-a", "l1-b"])
            #expect(applied.draining.count == 4)
            let topology = await coordinator.topology()
            #expect(topology.replicas.filter { old.contains($0.id) }.allSatisfy { $0.state == .draining })
            #expect(topology.replicas.filter { !old.contains($0.id) }.allSatisfy { $0.state == .serving })
            for id in old {
                _ = await coordinator.heartbeat(replicaID: id, load: ReplicaLoad(inFlightRows: 0))
                _ = await coordinator.heartbeat(replicaID: id, load: ReplicaLoad(inFlightRows: 0))
            }
            await coordinator.tick()
            #expect(scaler.calls.withLock { $0.filter { $0.hasPrefix("retire") }.count } == 4)
            for id in old { await coordinator.deregister(id) }
            await coordinator.tick()
            #expect(await coordinator.status().groups.map(\.group).sorted() == ["l0-a", "l0-b", "l1-a", "l1-b"])
        }
    }

    @Test("cold start: an expert with no replica is started through the scaler; without a scaler, a clear error")
    func coldStart() async throws {
        try await Self.withCoordinator { coordinator, _, checkpoint in
            let expert = ExpertAddress(layer: "1", expert: 2)
            await #expect(
                throws: CoordinatorError.cannotStart(
                    [expert], reason: "no replica hosts it and the coordinator runs without a scaler")
            ) {
                try await coordinator.ensure([expert], reason: "test")
            }
            _ = checkpoint
        }
        try await Self.withCoordinator { coordinator, _, checkpoint in
            let expert = ExpertAddress(layer: "1", expert: 2)
            let scaler = ZeroScaler(groups: ScalingGroup.perExpertIndex(layers: checkpoint.layers))
            try await coordinator.start(scaler: scaler)
            #expect(await coordinator.topology().startable.count == 8)
            try await coordinator.ensure([expert], reason: "test")
            #expect(scaler.calls.withLock { $0 } == ["set *:2 1"])
            #expect(
                await coordinator.status().decisions.last?.reason.hasPrefix("cold start: layer 1 expert 2 requested")
                    == true)
            #expect(await !coordinator.covers([expert]))
            _ = try await coordinator.register(
                Self.registration(
                    "127.0.0.1:1003", group: "*:2", experts: [expert, ExpertAddress(layer: "0", expert: 2)]))
            #expect(await coordinator.covers([expert]))
            // Asked again while it serves: nothing more to start.
            try await coordinator.ensure([expert], reason: "test")
            #expect(scaler.calls.withLock { $0.count } == 1)
        }
    }

    @Test("prune masks an expert in the topology; too many pruned in a layer is refused; restore brings it back")
    func prune() async throws {
        try await Self.withCoordinator { coordinator, _, _ in
            let pruned = try await coordinator.setPruned(ExpertAddress(layer: "0", expert: 1), pruned: true)
            #expect(pruned == [ExpertAddress(layer: "0", expert: 1)])
            #expect(await coordinator.topology().pruned == pruned)
            _ = try await coordinator.setPruned(ExpertAddress(layer: "0", expert: 2), pruned: true)
            // 4 experts, top-2: a third would leave 1.
            await #expect(throws: CoordinatorError.tooFewExperts(layer: "0", remaining: 1, topK: 2)) {
                try await coordinator.setPruned(ExpertAddress(layer: "0", expert: 3), pruned: true)
            }
            #expect(
                try await coordinator.setPruned(ExpertAddress(layer: "0", expert: 1), pruned: false) == [
                    ExpertAddress(layer: "0", expert: 2)
                ])
            await #expect(throws: CoordinatorError.unknownExpert(ExpertAddress(layer: "7", expert: 0))) {
                try await coordinator.setPruned(ExpertAddress(layer: "7", expert: 0), pruned: true)
            }
        }
    }
}

/// Groups that start at zero replicas.
final class ZeroScaler: ExpertScaler {
    let groups: [ScalingGroup]
    let calls = Mutex<[String]>([])

    init(groups: [ScalingGroup]) { self.groups = groups }

    var name: String { "zero" }
    var canStart: Bool { true }
    func initialGroups() async throws -> [(group: ScalingGroup, replicas: Int)] { self.groups.map { ($0, 0) } }
    func setReplicas(_ replicas: Int, of group: ScalingGroup) async throws {
        self.calls.withLock { $0.append("set \(group) \(replicas)") }
    }
    func retire(_ replica: RetiringReplica, leaving replicas: Int, of group: ScalingGroup) async throws {}
    func run() async throws {}
}

@Suite("replica precisions in the coordinator's topology and status")
struct ReplicaPrecisionTests {
    @Test("a replica's precisions travel from its registration to the topology and the status (table and JSON)")
    func precisionsReachTopologyAndStatus() async throws {
        try await CoordinatorTests.withCoordinator { coordinator, _, _ in
            let (a, b) = (ExpertAddress(layer: "0", expert: 1), ExpertAddress(layer: "1", expert: 1))
            var mixed = CoordinatorTests.registration("127.0.0.1:7001", group: "*:1", experts: [a, b])
            mixed.precisions = [a: "int8", b: "bf16"]
            var plain = CoordinatorTests.registration("127.0.0.1:7002", group: "*:1", experts: [a, b])
            plain.precisions = [a: "int8", b: "int8"]
            _ = try await coordinator.register(mixed)
            _ = try await coordinator.register(plain)
            let replicas = await coordinator.topology().replicas.sorted { $0.endpoint < $1.endpoint }
            #expect(replicas.map(\.precisions) == [[a: "int8", b: "bf16"], [a: "int8", b: "int8"]])
            let wire = Moemesh_V1_Topology(await coordinator.topology())
            #expect(
                wire.replicas.first { $0.endpoint == "127.0.0.1:7001" }?.precisions.map {
                    "\($0.expert.address)=\($0.precision)"
                } == ["layer 0 expert 1=int8", "layer 1 expert 1=bf16"])
            let report = StatusReport(await coordinator.status())
            #expect(report.replicas.map(\.precision).sorted() == ["bf16×1, int8×1", "int8"])
            #expect(report.table().contains("PRECISION"))
            #expect(try report.json().contains(#""precision":"int8""#))
        }
    }
}

@Suite("co-activation telemetry in the coordinator")
struct CoactivationTelemetryTests {
    static func report(router: String, layer: String, experts: Int32, pairs: [(Int32, Int32, Int64)], tokens: Int64)
        -> Moemesh_V1_DemandReport
    {
        .with {
            $0.routerID = router
            $0.coactivation = [
                .with {
                    $0.layer = layer
                    $0.numExperts = experts
                    $0.tokens = tokens
                    $0.pairs = pairs.map { pair in
                        .with {
                            $0.a = pair.0
                            $0.b = pair.1
                            $0.tokens = pair.2
                        }
                    }
                }
            ]
        }
    }

    @Test("routers' counts are summed per layer over the window and shown by the status (JSON and table)")
    func summedInStatus() async throws {
        try await CoordinatorTests.withCoordinator { coordinator, _, _ in
            try await coordinator.reportDemand(
                DemandReport(
                    Self.report(router: "r1", layer: "0", experts: 4, pairs: [(0, 1, 5), (2, 3, 1)], tokens: 9)))
            try await coordinator.reportDemand(
                DemandReport(
                    Self.report(router: "r2", layer: "0", experts: 4, pairs: [(1, 0, 2), (1, 3, 4)], tokens: 6)))
            let status = await coordinator.status()
            #expect(status.coactivation.keys.sorted() == ["0"])
            let layer = try #require(status.coactivation["0"])
            #expect(layer.tokens == 15)
            #expect(layer.pairs.map { [$0.a, $0.b, $0.tokens] } == [[0, 1, 7], [1, 3, 4], [2, 3, 1]])
            let report = StatusReport(status)
            #expect(
                try report.json().contains(
                    #""coactivation":[{"layer":"0","num_experts":4,"pairs":[[0,1,7],[1,3,4],[2,3,1]],"tokens":15}]"#))
            #expect(report.table().contains("layer 0: 0+1 ×7, 1+3 ×4, 2+3 ×1 of 15 tokens"))
        }
    }

    @Test("a count for a layer the model lacks, of another width, or with a bad pair is refused, saying why")
    func refused() async throws {
        try await CoordinatorTests.withCoordinator { coordinator, _, _ in
            await #expect(
                throws: CoordinatorError.invalidRequest(
                    "coactivation: layer '9' is not an MoE layer of this model; MoE layers: 0, 1")
            ) {
                try await coordinator.reportDemand(
                    DemandReport(Self.report(router: "r", layer: "9", experts: 4, pairs: [(0, 1, 1)], tokens: 1)))
            }
            await #expect(
                throws: CoordinatorError.invalidRequest(
                    "coactivation of layer '0': num_experts: expected 4, got 8")
            ) {
                try await coordinator.reportDemand(
                    DemandReport(Self.report(router: "r", layer: "0", experts: 8, pairs: [(0, 1, 1)], tokens: 1)))
            }
            #expect(
                throws: CoactivationError(
                    layer: "0",
                    reason: "pair (2, 2) × 1: expected two different experts in 0..<4 and a count of 0 or more")
            ) {
                try DemandReport(Self.report(router: "r", layer: "0", experts: 4, pairs: [(2, 2, 1)], tokens: 1))
            }
            #expect(throws: CoactivationError(layer: "0", reason: "num_experts: expected 1 to 65536, got 0")) {
                try DemandReport(Self.report(router: "r", layer: "0", experts: 0, pairs: [], tokens: 1))
            }
            #expect(await coordinator.status().coactivation.isEmpty)
        }
    }
}
