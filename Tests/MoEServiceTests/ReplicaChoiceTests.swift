import GRPCCore
import GRPCInProcessTransport
import GRPCNIOTransportHTTP2
import MoECore
import MoEExpert
import MoEModel
import MoEProto
import MoERouter
import MoERuntime
import MoEServing
import MoETestSupport
import Testing

@Suite("replica choice and failover in the router")
struct ReplicaChoiceTests {
    @Test("replicas are tried with fewest outstanding calls first, and a failed one last")
    func ordering() async throws {
        // Clients that are never called: only their endpoints matter here.
        let transport = InProcessTransport()
        let client = Moemesh_V1_Expert.Client(wrapping: GRPCClient(transport: transport.client))
        let endpoints = (1...3).map { ServiceEndpoint(host: "10.0.0.\($0)", port: 1) }
        let address = ExpertAddress(layer: "0", expert: 0)
        let topology = ExpertTopology(replicas: [address: endpoints.map { ExpertReplica(endpoint: $0, client: client) }])
        // Ties are taken in turn.
        let firsts = (0..<3).map { _ in topology.chooseReplica(for: address)!.endpoint }
        #expect(Set(firsts) == Set(endpoints))
        // Outstanding calls push a replica back.
        topology.callStarted(endpoints[0])
        topology.callStarted(endpoints[0])
        topology.callStarted(endpoints[1])
        #expect(topology.candidates(for: address).map(\.endpoint) == [endpoints[2], endpoints[1], endpoints[0]])
        // A failure makes a replica last, whatever its load.
        topology.callStarted(endpoints[2])
        topology.callEnded(endpoints[2], failed: true)
        #expect(topology.candidates(for: address).last?.endpoint == endpoints[2])
    }

    @Test("rows sent to an unreachable replica are retried on another, and the answer is right")
    func failover() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let addresses = checkpoint.layers.flatMap(\.expertAddresses)
        let reference = try InProcessMoE(checkpoint: checkpoint)
        let live = InProcessTransport()
        let dead = try HTTP2ClientTransport.Posix(target: .ipv4(host: "127.0.0.1", port: 1), transportSecurity: .plaintext)
        try await withGRPCServer(transport: live.server, services: [ExpertService(checkpoint: checkpoint, experts: addresses)]) { _ in
            try await withGRPCClient(transport: live.client) { liveClient in
                try await withGRPCClient(transport: dead) { deadClient in
                    let deadReplica = ExpertReplica(endpoint: ServiceEndpoint(host: "127.0.0.1", port: 1), client: Moemesh_V1_Expert.Client(wrapping: deadClient))
                    let liveReplica = ExpertReplica(endpoint: ServiceEndpoint(host: "in-process", port: 2), client: Moemesh_V1_Expert.Client(wrapping: liveClient))
                    let topology = ExpertTopology(replicas: Dictionary(uniqueKeysWithValues: addresses.map { ($0, [deadReplica, liveReplica]) }))
                    let executor = RemoteExpertExecutor(
                        topology: topology, wireDType: .f32, callOptions: ServingConfiguration().callOptions(timeout: .seconds(5)))
                    let pipeline = try #require(reference.pipelines["0"])
                    for seed in 0..<4 {
                        let hidden = model.randomHidden(tokens: 5, seed: UInt64(seed))
                        let result = try await pipeline.forward(hidden, executor: executor)
                        let expected = try await reference.forward(layer: "0", hidden: hidden)
                        #expect(relativeError(result.output.values, expected.output.values) <= 1e-6)
                    }
                    // The dead replica is now suspect: every expert tries the live one first.
                    #expect(addresses.allSatisfy { topology.chooseReplica(for: $0)?.endpoint.port == 2 })
                }
            }
        }
    }
}
