import GRPCCore
import MoECore
import MoEModel
import MoEInProcess
import MoEProcesses
import MoERouter
import MoERuntime
import MoEServing
import MoETestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("replicas under failure (real processes)", .serialized)
struct ReplicaFailoverTests {
    @Test(
        "kill -9 of an expert replica during sustained load loses no request: the calls it had are retried on the other"
    )
    func killReplicaUnderLoad() async throws {
        let model = try SmallModel(
            shape: .init(experts: 4, topK: 2, hiddenSize: 64, intermediateSize: 96, layers: 1), seed: 31)
        defer { model.remove() }
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        // Two replicas of every expert (two services hosting all of them) behind a router with /metrics.
        var processes: [ChildProcess] = []
        defer { for process in processes { process.signal(SIGKILL); _ = process.pollExit() } }
        var experts: [ServiceEndpoint] = []
        for replica in 0..<2 {
            let (process, endpoint) = try await startMoemesh(
                "expert \(replica)", role: "expert", ["expert", "--model", model.path, "--port", "0", "--threads", "1"])
            processes.append(process)
            experts.append(endpoint)
        }
        let metricsPort = Loopback.freePort()
        let (routerProcess, router) = try await startMoemesh(
            "router", role: "router",
            ["router", "--model", model.path, "--port", "0", "--http-port", String(metricsPort)]
                + experts.flatMap { ["--expert", $0.description] })
        processes.append(routerProcess)

        let victim = processes[0].pid
        let tally = AnswerTally()
        try await RouterClient.with(endpoint: router) { client in
            await withTaskGroup(of: Void.self) { group in
                for worker in 0..<4 {
                    group.addTask {
                        await tally.drive(client: client, model: model, reference: reference, worker: worker, calls: 40)
                    }
                }
                group.addTask {
                    await tally.waitForAnswers(40)
                    kill(victim, SIGKILL)
                }
            }
        }
        #expect(!MoemeshBinary.isAlive(victim))
        #expect(tally.answered.withLock { $0 } == 160)
        #expect(tally.wrong.withLock { $0 } == 0, "\(tally.errors.withLock { $0.prefix(3) })")
        // The failover did happen: calls that reached the dead replica were sent again to the live one.
        let metrics = try #require(Loopback.get(port: metricsPort, path: "/metrics")?.body)
        #expect(Self.sum(of: "moemesh_router_expert_retries_total", in: metrics) > 0, "\(metrics)")
    }

    /// The sum of a Prometheus counter's series.
    static func sum(of name: String, in text: String) -> Double {
        text.split(separator: "\n").filter { $0.hasPrefix(name + "{") || $0.hasPrefix(name + " ") }
            .compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }.reduce(0, +)
    }
}
