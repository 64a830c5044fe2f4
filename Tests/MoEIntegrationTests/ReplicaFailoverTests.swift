import GRPCCore
import MoECore
import MoEModel
import MoERouter
import MoERuntime
import MoEServing
import MoETestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("replicas under failure (real processes)", .serialized)
struct ReplicaFailoverTests {
    @Test("kill -9 of an expert replica during sustained load loses no request")
    func killReplicaUnderLoad() async throws {
        let model = try SmallModel(shape: .init(experts: 4, topK: 2, hiddenSize: 64, intermediateSize: 96, layers: 1), seed: 31)
        defer { model.remove() }
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        try await withUpMesh(model: model.path, extraArguments: ["--replicas", "2"]) { router, upPID in
            let children = MoemeshBinary.children(of: upPID)
            #expect(children.count == 9)  // 4 experts × 2 replicas + the router
            let experts = children.filter {
                MoemeshBinary.commandLine(of: $0).split(separator: " ").dropFirst().first == "expert"
            }.sorted()
            #expect(experts.count == 8)
            let victim = try #require(experts.first)
            let tally = Tally()
            try await RouterClient.with(endpoint: router) { client in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for worker in 0..<4 {
                        group.addTask {
                            for call in 0..<40 {
                                let hidden = model.randomHidden(tokens: 3, seed: UInt64(worker * 1000 + call))
                                let result = try await client.forward(layer: "0", hiddenStates: try Tensor(hidden))
                                let expected = try await reference.forward(layer: "0", hidden: hidden)
                                let right = relativeError(result.output.floats(), expected.output.values) <= 1e-5
                                tally.count(right: right)
                            }
                        }
                    }
                    group.addTask {
                        try await Task.sleep(for: .milliseconds(150))
                        kill(victim, SIGKILL)
                    }
                    try await group.waitForAll()
                }
            }
            #expect(!MoemeshBinary.isAlive(victim))
            #expect(tally.answered.withLock { $0 } == 160)
            #expect(tally.wrong.withLock { $0 } == 0)
        }
    }
}

/// Answers counted across concurrent workers.
private final class Tally: Sendable {
    let answered = Mutex(0)
    let wrong = Mutex(0)

    func count(right: Bool) {
        self.answered.withLock { $0 += 1 }
        if !right { self.wrong.withLock { $0 += 1 } }
    }
}
