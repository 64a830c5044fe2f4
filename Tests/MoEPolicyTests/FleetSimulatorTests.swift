import MoECore
import MoEPolicy
import Testing

@Suite("fleet simulator (moemesh simulate)")
struct FleetSimulatorTests {
    /// A fleet small enough for a debug build: every time in seconds.
    static func small() -> FleetModel {
        var model = FleetModel()
        model.nodes = 4
        model.slotsPerNode = 2
        model.layers = 2
        model.experts = 16
        model.topK = 2
        model.hiddenSize = 64
        model.intermediateSize = 128
        model.expertsPerGroup = 2
        model.clients = 32
        model.tokensPerRequest = 4
        model.telemetryTokens = 4000
        model.warmUp = 0.2
        model.measured = 1
        model.policyInterval = 0.1
        model.demandWindow = 0.2
        model.cooldown = 0.1
        model.idleTimeout = 0.2
        model.coldStart = 0.05
        return model
    }

    /// One node of `slots` slots serving one expert (top-1, one layer), `clients` closed-loop clients, calls of
    /// `call` seconds and nothing else: no router work, no hop, no batching. Queueing in closed form.
    static func oneExpert(slots: Int, clients: Int, call: ServiceTime) -> FleetModel {
        var model = Self.small()
        model.nodes = 1
        model.slotsPerNode = slots
        model.layers = 1
        model.experts = 1
        model.topK = 1
        model.expertsPerGroup = 1
        model.clients = clients
        model.routers = 1
        model.batching = nil
        model.call = call
        model.router = ServiceTime(fixed: 0, perRow: 0)
        model.hopLatency = 0
        model.bandwidth = 1e30
        return model
    }

    static let alone = FleetScenario(placement: .staticPlacement, scaleToZero: false)

    @Test("one client, one slot, one expert: every request takes exactly its call, and throughput follows")
    func singleServer() throws {
        var model = Self.oneExpert(slots: 1, clients: 1, call: ServiceTime(fixed: 0.002, perRow: 0.001))
        model.tokensPerRequest = 1
        let result = try FleetSimulator(model: model).run(Self.alone)
        // 3 ms per request: 333 requests in the measured second (one may straddle its end).
        #expect(abs(result.p50Ms - 3) < 1e-9 && abs(result.p99Ms - 3) < 1e-9)
        #expect((332...334).contains(Int(result.tokensPerSecond)))
        #expect(result.callsPerToken == 1 && result.servicesPerToken == 1)
    }

    @Test(
        "a node whose jobs share its slots: 3 equal calls on 2 slots all end at 1.5 × a call; in FIFO order, one waits")
    func sharedNode() throws {
        var model = Self.oneExpert(slots: 2, clients: 3, call: ServiceTime(fixed: 0.002, perRow: 0))
        model.discipline = .shared
        let shared = try FleetSimulator(model: model).run(Self.alone)
        #expect(abs(shared.p50Ms - 3) < 1e-6 && abs(shared.p99Ms - 3) < 1e-6)
        #expect(abs(shared.tokensPerSecond - 4000) <= 8)  // 2 slots' worth: 1,000 calls/s of 4 tokens
        model.discipline = .fifo
        let fifo = try FleetSimulator(model: model).run(Self.alone)
        #expect(fifo.p99Ms > 3.3)  // a call that finds both slots taken waits for one
        #expect(abs(fifo.tokensPerSecond - 4000) <= 8)
    }

    @Test("service jitter spreads each job's time around its mean (exponential at 1) and leaves the routing as it was")
    func serviceJitter() throws {
        var model = Self.oneExpert(slots: 1, clients: 1, call: ServiceTime(fixed: 0.002, perRow: 0))
        model.measured = 4
        model.serviceJitter = 1
        let jittered = try FleetSimulator(model: model).run(Self.alone)
        // ~2,000 calls of mean 2 ms: the rate stays near 500 requests/s (4 tokens each); the median of an exponential
        // is ln 2 of its mean, its 99th percentile ln 100.
        #expect(abs(jittered.tokensPerSecond / 2000 - 1) < 0.1)
        #expect(abs(jittered.p50Ms / (2 * 0.6931) - 1) < 0.15)
        #expect(abs(jittered.p99Ms / (2 * 4.6052) - 1) < 0.25)
        model.serviceJitter = 2
        #expect(throws: FleetSimulator.SimulationError("service jitter: expected 0…1, got 2.0")) {
            try FleetSimulator(model: model)
        }
    }

    @Test("a saturated fleet serves at most nodes × slots calls at a time: tokens/s stays under that bound")
    func capacityBound() throws {
        var model = Self.small()
        model.clients = 256
        model.call = ServiceTime(fixed: 0.001, perRow: 0)
        let result = try FleetSimulator(model: model).run(.init(placement: .staticPlacement, scaleToZero: false))
        let callsPerSecondBound = Double(model.nodes * model.slotsPerNode) / model.call.fixed
        let callsPerSecond = result.tokensPerSecond * result.callsPerToken * Double(model.layers)
        #expect(callsPerSecond <= callsPerSecondBound * 1.01)
        #expect(callsPerSecond >= callsPerSecondBound * 0.5)  // saturated: 256 clients keep 8 slots busy
    }

    @Test("router batching: concurrent requests of a layer share one call per expert, so fewer calls carry more rows")
    func batchingMergesRequests() throws {
        var model = Self.oneExpert(slots: 1, clients: 8, call: ServiceTime(fixed: 0.001, perRow: 0))
        let alone = try FleetSimulator(model: model).run(Self.alone)
        // One call per request of 4 tokens; the one slot serves 1,000 calls a second.
        #expect(alone.callsPerToken == 0.25)
        #expect(abs(alone.tokensPerSecond - 4000) <= 4)
        model.batching = Batching(maxTokens: 4096, maxDelay: 0.0005, maxConcurrentBatches: 1)
        let batched = try FleetSimulator(model: model).run(Self.alone)
        // Under load a leader waits for the other 7: one call carries all 8 requests (32 tokens).
        #expect(batched.callsPerToken < 0.25 / 4)
        #expect(batched.tokensPerSecond > 4 * alone.tokensPerSecond)
        model.batching = Batching(maxTokens: 8, maxDelay: 0.0005, maxConcurrentBatches: 1)
        let capped = try FleetSimulator(model: model).run(Self.alone)
        #expect(capped.callsPerToken == 0.125)  // 8 tokens: 2 requests per batch
    }

    @Test("the same model runs to the same figures (seeded, no clock in the simulation)")
    func deterministic() throws {
        let simulator = try FleetSimulator(model: Self.small())
        for scenario in FleetScenario.all {
            var first = try simulator.run(scenario)
            var second = try simulator.run(scenario)
            first.runSeconds = 0
            second.runSeconds = 0
            #expect(first == second, "\(scenario)")
        }
    }

    @Test("one hot expert on one node: EPLB's replicas on the other nodes raise throughput over static placement")
    func replicationRelievesTheHotNode() throws {
        var model = Self.small()
        model.nodes = 4
        model.experts = 8
        model.topK = 1
        model.layers = 1
        model.expertsPerGroup = 1
        model.extraReplicaShare = 0.5  // 4 redundant replicas for 8 groups
        model.routing = .zipf(exponent: 8, affinity: 0, teamSize: 1)  // rank 0 takes ~all tokens
        model.clients = 128
        let simulator = try FleetSimulator(model: model)
        let fixed = try simulator.run(.init(placement: .staticPlacement, scaleToZero: false))
        let eplb = try simulator.run(.init(placement: .eplb, scaleToZero: false))
        // The hot group gets a replica on every node (3 of the 4 redundant ones), so up to 4 × the hot node's capacity.
        #expect(eplb.tokensPerSecond > 3 * fixed.tokensPerSecond)
        #expect(eplb.replicasAtStart == fixed.replicasAtStart + 4)
        #expect(eplb.nodeBalancedness > 2 * fixed.nodeBalancedness)
    }

    @Test("experts that are always chosen together: the planner's groups hold them, so a token reaches fewer services")
    func plannerFindsTeams() throws {
        var model = Self.small()
        model.routing = .zipf(exponent: 0.5, affinity: 1, teamSize: 2)  // a token's 2 experts are one team
        let simulator = try FleetSimulator(model: model)
        let fixed = try simulator.run(.init(placement: .staticPlacement, scaleToZero: false))
        let planned = try simulator.run(.init(placement: .planner, scaleToZero: false))
        #expect(planned.pairsInsideGroups == 1)
        #expect(planned.servicesPerToken == 1)
        #expect(fixed.servicesPerToken > 1.5)
    }

    @Test("the coordinator's policy scales a group with no traffic to zero: fewer replicas on average")
    func scaleToZero() throws {
        var model = Self.small()
        // Layer traffic recorded on 4 of 16 experts: the other groups never see a row.
        var counts = Coactivation(experts: 16)
        counts.add(0, 1, count: 10)
        counts.add(2, 3, count: 10)
        counts.addTokens(20)
        model.routing = .recorded([
            .init(demand: [10, 10, 10, 10] + [Double](repeating: 0, count: 12), coactivation: counts)
        ])
        let simulator = try FleetSimulator(model: model)
        let kept = try simulator.run(.init(placement: .staticPlacement, scaleToZero: false))
        let scaled = try simulator.run(.init(placement: .staticPlacement, scaleToZero: true))
        #expect(kept.meanReplicas == Double(kept.replicasAtStart))
        // 12 idle groups go to zero; the 4 busy ones take some of the freed budget as hot groups (EPLB rule).
        #expect(scaled.meanReplicas < 0.6 * Double(scaled.replicasAtStart))
        #expect(scaled.scalingDecisions > 0)
        #expect(scaled.tokensPerSecond > 0)
    }

    @Test("recorded routing draws only experts with demand, and pairs as recorded")
    func recordedRouting() throws {
        var model = Self.small()
        model.layers = 1
        var counts = Coactivation(experts: 16)
        counts.add(3, 9, count: 5)
        counts.addTokens(5)
        model.routing = .recorded([.init(demand: (0..<16).map { $0 == 3 || $0 == 9 ? 5 : 0 }, coactivation: counts)])
        let simulator = try FleetSimulator(model: model)
        #expect(simulator.demand[0].enumerated().allSatisfy { $0.offset == 3 || $0.offset == 9 || $0.element == 0 })
        #expect(simulator.coactivation[0].counts.keys.sorted() == [3 * 16 + 9])
    }

    @Test("a model that cannot run is refused, saying what was expected")
    func refusals() {
        var model = Self.small()
        model.topK = 20
        #expect(throws: FleetSimulator.SimulationError("top-k: expected at most the 16 experts, got 20")) {
            try FleetSimulator(model: model)
        }
        model = Self.small()
        model.measured = 0
        #expect(throws: FleetSimulator.SimulationError("measured seconds: expected a finite value > 0, got 0.0")) {
            try FleetSimulator(model: model)
        }
        model = Self.small()
        model.nodeMemoryBytes = 1000
        #expect(throws: FleetSimulator.SimulationError.self) {
            try FleetSimulator(model: model).run(.init(placement: .planner, scaleToZero: false))
        }
    }

    @Test("the service-time fit recovers a line exactly and refuses a single row count")
    func serviceTimeFit() throws {
        let fit = try #require(ServiceTime.fit([(1, 0.003), (4, 0.006), (9, 0.011)]))
        #expect(abs(fit.fixed - 0.002) < 1e-12 && abs(fit.perRow - 0.001) < 1e-12)
        #expect(ServiceTime.fit([(2, 1), (2, 3)]) == nil)
    }
}
