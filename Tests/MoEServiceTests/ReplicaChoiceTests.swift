import CoreMetrics
import Prometheus
import GRPCCore
import GRPCNIOTransportHTTP2
import MoECore
import MoEDataPlane
import MoEExpert
import MoEModel
import MoEInProcess
import MoEProto
import MoERouter
import MoERuntime
import MoEServing
import MoETestSupport
import MoEWire
import Testing

@Suite("replica choice and failover in the router")
struct ReplicaChoiceTests {
    @Test("replicas are tried with fewest outstanding calls first, and an ejected one last")
    func ordering() async throws {
        // Channels that are never called: only their endpoints matter here.
        let endpoints = (1...3).map { ServiceEndpoint(host: "10.0.0.\($0)", port: 1) }
        let address = ExpertAddress(layer: "0", expert: 0)
        let replicas = try endpoints.map {
            ExpertReplica(endpoint: $0, channel: try DataPlaneChannel(target: $0.description), metadata: [:])
        }
        let scheduler = ReplicaScheduler()
        // Ties are taken in turn.
        let firsts = (0..<3).map { _ in scheduler.order(replicas, for: address).first!.endpoint }
        #expect(Set(firsts) == Set(endpoints))
        // Outstanding calls push a replica back.
        scheduler.callStarted(endpoints[0])
        scheduler.callStarted(endpoints[0])
        scheduler.callStarted(endpoints[1])
        #expect(scheduler.order(replicas, for: address).map(\.endpoint) == [endpoints[2], endpoints[1], endpoints[0]])
        // A replica that could not be reached is ejected: last, whatever its load.
        scheduler.callStarted(endpoints[2])
        scheduler.callEnded(endpoints[2], unreachable: "UNAVAILABLE: connection refused")
        #expect(scheduler.isEjected(endpoints[2]))
        #expect(scheduler.order(replicas, for: address).last?.endpoint == endpoints[2])
    }

    @Test("a replica is reached through its Unix domain socket only when it registered one on this host")
    func unixSocketOnlyOnThisHost() throws {
        let connections = try ExpertConnections(serving: ServingConfiguration())
        defer { connections.close() }
        let local = ServiceEndpoint(host: "127.0.0.1", port: 7001)
        let elsewhere = ServiceEndpoint(host: "10.0.0.2", port: 7001)
        let plain = ServiceEndpoint(host: "127.0.0.1", port: 7002)
        _ = try connections.replica(
            at: local, unixSocket: "/tmp/moemesh-test/expert-1.sock", host: HostIdentity.current)
        _ = try connections.replica(at: elsewhere, unixSocket: "/tmp/moemesh-test/expert-1.sock", host: "another-host")
        _ = try connections.replica(at: plain)
        #expect(
            connections.links == [
                local: "unix /tmp/moemesh-test/expert-1.sock", elsewhere: "tcp 10.0.0.2:7001",
                plain: "tcp 127.0.0.1:7002",
            ])
        let off = try ExpertConnections(serving: ServingConfiguration(), unixSockets: false)
        defer { off.close() }
        _ = try off.replica(at: local, unixSocket: "/tmp/moemesh-test/expert-1.sock", host: HostIdentity.current)
        #expect(off.links == [local: "tcp 127.0.0.1:7001"])
    }

    @Test("rows sent to an unreachable replica are retried on another, and the answer is right")
    func failover() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let reference = try InProcessMoE(checkpoint: checkpoint)
        try await withLiveAndDeadReplicas(checkpoint: checkpoint, replicas: { _, dead, live in [dead, live] }) {
            executor in
            let pipeline = try #require(reference.pipelines["0"])
            for seed in 0..<4 {
                let hidden = model.randomHidden(tokens: 5, seed: UInt64(seed))
                let result = try await pipeline.forward(hidden, executor: executor)
                let expected = try await reference.forward(layer: "0", hidden: hidden)
                #expect(relativeError(result.output.values, expected.output.values) <= 1e-6)
            }
            // The dead replica was ejected from the router's choice (for a while: when is not asserted).
            #expect(
                executor.scheduler.takeEjections().contains {
                    $0.endpoint == ServiceEndpoint(host: "127.0.0.1", port: 1)
                })
        }
    }

    @Test("a layer's experts go one message per replica (rows of each expert it hosts), and the answer is right")
    func oneMessagePerReplica() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let reference = try InProcessMoE(checkpoint: checkpoint)
        let addresses = checkpoint.layers.flatMap(\.expertAddresses)
        // Replica A hosts experts 0 and 1 of each layer, B experts 2 and 3.
        let hostedByA = addresses.filter { $0.expert < 2 }, hostedByB = addresses.filter { $0.expert >= 2 }
        let registry = PrometheusCollectorRegistry()
        let metrics = withMetricsFactory(PrometheusMetricsFactory(registry: registry)) { ServiceMetrics() }
        try await withDataPlaneServers([
            try ExpertService(checkpoint: checkpoint, experts: hostedByA).dataPlaneMethods(),
            try ExpertService(checkpoint: checkpoint, experts: hostedByB).dataPlaneMethods(),
        ]) { endpoints in
            try await withExpertReplicas(endpoints) { replicas in
                let executor = RemoteExpertExecutor(
                    topology: ExpertTopology(
                        replicas: Dictionary(
                            uniqueKeysWithValues: addresses.map { ($0, [replicas[$0.expert < 2 ? 0 : 1]]) })),
                    wireDType: .f32, metrics: metrics)
                var expectedMessages = 0
                for (tokens, layer) in [(1, "0"), (2, "1"), (9, "0"), (16, "1")] {
                    let hidden = model.randomHidden(tokens: tokens, seed: UInt64(tokens))
                    let result = try await #require(reference.pipelines[layer]).forward(hidden, executor: executor)
                    let expected = try await reference.forward(layer: layer, hidden: hidden)
                    #expect(result.routing.topkIDs == expected.routing.topkIDs)
                    #expect(relativeError(result.output.values, expected.output.values) <= 1e-6)
                    expectedMessages += Set(expected.routing.topkIDs.map { $0 < 2 }).count
                }
                #expect(
                    registry.emitToString().contains("\nmoemesh_router_expert_messages_total \(expectedMessages)\n"))
            }
        }
    }

    @Test(
        "an expert no replica can serve: UNAVAILABLE naming it, or, with reroute, its tokens on their next-best experts"
    )
    func unreachableExpertPolicies() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let lost = ExpertAddress(layer: "0", expert: 1)
        let masked = try InProcessMoE(checkpoint: checkpoint) { _ in RoutingPolicy(maskedExperts: [1]) }
        try await withLiveAndDeadReplicas(
            checkpoint: checkpoint, replicas: { address, dead, live in [address == lost ? dead : live] }
        ) { executor in
            // 16 tokens: expert 1 is among someone's top-2.
            let hidden = model.randomHidden(tokens: 16, seed: 4)
            var request = Moemesh_V1_ForwardRequest()
            request.layer = "0"
            request.hiddenStates = Moemesh_V1_Tensor(hidden, dtype: .f32)
            request.returnRouting = true

            for reroute in [false, true] {
                let routing = RoutingConfiguration(rerouteUnreachable: reroute)
                let service = RouterService(
                    modelType: checkpoint.modelType, hiddenSize: checkpoint.hiddenSize,
                    pipelines: try checkpoint.layers.map {
                        try MoELayerPipeline(checkpoint: checkpoint, layer: $0, policy: routing.policy(for: $0))
                    },
                    executor: executor)
                if reroute {
                    let response = try await service.forward(request)
                    let expected = try await masked.forward(layer: "0", hidden: hidden)
                    let output = response.output.data.withUnsafeBytes { DType.f32.decodeFloats($0) }
                    #expect(response.reroutedExperts == [1])
                    #expect(!response.routing.topkIds.contains(1))
                    #expect(response.routing.topkIds == expected.routing.topkIDs)
                    #expect(relativeError(output, expected.output.values) <= 1e-6)
                } else {
                    do {
                        _ = try await service.forward(request)
                        Issue.record("answered without expert 1")
                    } catch let error as RouterError {
                        #expect(error.rpcErrorCode == .unavailable)
                        #expect(error.rpcErrorMessage.hasPrefix("layer 0 expert 1 at 127.0.0.1:1 is unavailable"))
                    }
                }
            }
        }
    }
}

/// An expert service hosting every expert of `checkpoint` (in process, live) and a replica nothing answers for
/// (127.0.0.1:1, dead); `replicas` gives each expert its replicas from (dead, live); `body` gets an executor over
/// that topology.
private func withLiveAndDeadReplicas(
    checkpoint: MoECheckpoint,
    replicas: @escaping (ExpertAddress, ExpertReplica, ExpertReplica) -> [ExpertReplica],
    _ body: (RemoteExpertExecutor) async throws -> Void
) async throws {
    let addresses = checkpoint.layers.flatMap(\.expertAddresses)
    try await withDataPlaneServer(try ExpertService(checkpoint: checkpoint, experts: addresses).dataPlaneMethods()) {
        endpoint in
        try await withExpertReplicas([endpoint], streams: false) { live in
            let dead = ServiceEndpoint(host: "127.0.0.1", port: 1)
            let deadReplica = ExpertReplica(
                endpoint: dead, channel: try DataPlaneChannel(target: dead.description), metadata: [:])
            let topology = ExpertTopology(
                replicas: Dictionary(
                    uniqueKeysWithValues: addresses.map { ($0, replicas($0, deadReplica, live[0])) }))
            try await body(
                RemoteExpertExecutor(
                    topology: topology, wireDType: .f32,
                    expertTimeout: .seconds(5)))
        }
    }
}
