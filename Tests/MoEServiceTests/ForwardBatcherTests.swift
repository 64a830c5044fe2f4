import MoECore
import MoEModel
import MoERouter
import MoERuntime
import MoETestSupport
import Synchronization
import Testing

/// Counts calls, and holds each for a moment so that concurrent requests pile up.
final class CountingExecutor: ExpertExecutor {
    let inner: LocalExpertExecutor
    let calls = Mutex(0)

    init(_ inner: LocalExpertExecutor) { self.inner = inner }

    func compute(_ rows: ExpertRows) async throws -> Matrix {
        self.calls.withLock { $0 += 1 }
        try await Task.sleep(for: .milliseconds(20))
        return try await self.inner.compute(rows)
    }
}

@Suite("dynamic batching in the router")
struct ForwardBatcherTests {
    @Test("16 concurrent calls share expert calls, and each gets exactly its own answer")
    func concurrentCallsShareBatches() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        let pipeline = try #require(reference.pipelines["0"])
        let executor = CountingExecutor(reference.executor)
        let batcher = ForwardBatcher(configuration: .init(maxTokens: 64, maxConcurrentBatches: 1))
        let inputs = (0..<16).map { model.randomHidden(tokens: 1 + $0 % 3, seed: UInt64($0)) }

        let results = try await withThrowingTaskGroup(of: (Int, MoELayerResult).self) { group in
            for (index, hidden) in inputs.enumerated() {
                group.addTask { (index, try await batcher.forward(hidden, pipeline: pipeline, executor: executor)) }
            }
            var results = [MoELayerResult?](repeating: nil, count: inputs.count)
            for try await (index, result) in group { results[index] = result }
            return results.map { $0! }
        }
        for (index, hidden) in inputs.enumerated() {
            let alone = try await reference.forward(layer: "0", hidden: hidden)
            #expect(results[index].output.rows == hidden.rows)
            #expect(relativeError(results[index].output.values, alone.output.values) <= 1e-6, "call \(index)")
            #expect(results[index].routing == alone.routing, "call \(index)")
            #expect(results[index].balance.tokens == hidden.rows)
        }
        // Unbatched, 16 calls of top-2 over 4 experts make at least 16 · 2 expert calls; batched, at most
        // 4 experts per batch and a handful of batches.
        let calls = executor.calls.withLock { $0 }
        #expect(calls <= 4 * 4, "expert calls: \(calls)")
    }

    @Test("cancelling the call that leads a batch does not fail the other calls in it")
    func leaderCancellation() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        let pipeline = try #require(reference.pipelines["0"])
        let executor = CountingExecutor(reference.executor)
        let batcher = ForwardBatcher(configuration: .init(maxDelay: .zero, maxConcurrentBatches: 1))
        let hidden = model.randomHidden(tokens: 2, seed: 9)
        // A leads alone; B and C queue behind it; B then leads the batch {B, C} and is cancelled while it runs.
        let a = Task { try await batcher.forward(hidden, pipeline: pipeline, executor: executor) }
        try await Task.sleep(for: .milliseconds(5))
        let b = Task { try await batcher.forward(hidden, pipeline: pipeline, executor: executor) }
        try await Task.sleep(for: .milliseconds(2))
        let c = Task { try await batcher.forward(hidden, pipeline: pipeline, executor: executor) }
        _ = try await a.value
        try await Task.sleep(for: .milliseconds(5))
        b.cancel()
        let expected = try await reference.forward(layer: "0", hidden: hidden)
        let answer = try await c.value
        #expect(answer.output == expected.output)
        _ = try? await b.value
    }

    @Test("a batch's failure reaches every call in it")
    func failuresReachEveryone() async throws {
        struct Broken: ExpertExecutor {
            func compute(_ rows: ExpertRows) async throws -> Matrix {
                try await Task.sleep(for: .milliseconds(10))
                throw RouterError.noReplica(rows.address)
            }
        }
        let model = try SmallModel()
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let pipeline = try MoELayerPipeline(checkpoint: checkpoint, layer: checkpoint.layer("0"))
        let batcher = ForwardBatcher(configuration: .init(maxConcurrentBatches: 1))
        let failures = await withTaskGroup(of: Bool.self) { group in
            for index in 0..<6 {
                group.addTask {
                    do {
                        _ = try await batcher.forward(model.randomHidden(tokens: 2, seed: UInt64(index)), pipeline: pipeline, executor: Broken())
                        return false
                    } catch { return error is RouterError }
                }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(failures == 6)
    }
}
