import MoECore
import MoEModel
import MoEInProcess
import MoERouter
import MoERuntime
import MoETestSupport
import Synchronization
import Testing

@Suite("dynamic batching in the router", .timeLimit(.minutes(5)))
struct ForwardBatcherTests {
    /// Calls B and C of `hidden` as one batch held at the experts: A leads alone and is held, B and C queue behind
    /// it, A is released and answered, and B leads the batch {B, C}.
    static func batchOfTwo<Inner: ExpertExecutor>(
        _ hidden: Matrix, pipeline: MoELayerPipeline, batcher: ForwardBatcher, executor: HoldingExecutor<Inner>,
        expertsPerBatch: Int
    ) async throws -> (b: Task<MoELayerResult, any Error>, c: Task<MoELayerResult, any Error>) {
        let a = Task { try await batcher.forward(hidden, pipeline: pipeline, executor: executor) }
        await executor.waitUntilHeld(expertsPerBatch)
        let b = Task { try await batcher.forward(hidden, pipeline: pipeline, executor: executor) }
        try #require(await batcher.changes.wait { batcher.pendingCalls(layer: "0") == 1 })
        let c = Task { try await batcher.forward(hidden, pipeline: pipeline, executor: executor) }
        try #require(await batcher.changes.wait { batcher.pendingCalls(layer: "0") == 2 })
        executor.release()
        _ = try await a.value
        await executor.waitUntilHeld(expertsPerBatch)
        return (b, c)
    }

    @Test("16 concurrent calls share expert calls, and each gets exactly its own answer")
    func concurrentCallsShareBatches() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        let pipeline = try #require(reference.pipelines["0"])
        let executor = HoldingExecutor(reference.executor)
        let batcher = ForwardBatcher(configuration: .init(maxTokens: 64, maxConcurrentBatches: 1))
        let inputs = (0..<16).map { model.randomHidden(tokens: 1 + $0 % 3, seed: UInt64($0)) }
        let firstCalls = try pipeline.route(inputs[0]).tokensPerExpert.filter { $0 > 0 }.count

        let results = try await withBatcher(batcher) {
            try await withThrowingTaskGroup(of: (Int, MoELayerResult).self) { group in
                // The first call leads a batch of its own and is held at the experts; the other 15 queue behind it.
                group.addTask { (0, try await batcher.forward(inputs[0], pipeline: pipeline, executor: executor)) }
                await executor.waitUntilHeld(firstCalls)
                for index in 1..<inputs.count {
                    group.addTask {
                        (index, try await batcher.forward(inputs[index], pipeline: pipeline, executor: executor))
                    }
                }
                try #require(await batcher.changes.wait { batcher.pendingCalls(layer: "0") == inputs.count - 1 })
                executor.release(holdLater: false)
                var results = [MoELayerResult?](repeating: nil, count: inputs.count)
                for try await (index, result) in group { results[index] = result }
                return results.map { $0! }
            }
        }
        for (index, hidden) in inputs.enumerated() {
            let alone = try await reference.forward(layer: "0", hidden: hidden)
            #expect(results[index].output.rows == hidden.rows)
            #expect(relativeError(results[index].output.values, alone.output.values) <= 1e-6, "call \(index)")
            // Routing is batch-invariant: bitwise the same in a batch of 15 as alone.
            #expect(results[index].routing == alone.routing, "call \(index)")
            #expect(results[index].logits == alone.logits, "call \(index)")
            #expect(results[index].balance.tokens == hidden.rows)
        }
        // Unbatched, 16 calls of top-2 over 4 experts make at least 16 · 2 expert calls; here two batches: the first
        // call's, then one of the other 15 (45 rows ≤ 64), at most 4 experts each.
        #expect(executor.calls <= 2 * 4, "expert calls: \(executor.calls)")
    }

    @Test("cancelling the call that leads a batch does not fail the other calls in it")
    func leaderCancellation() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        let pipeline = try #require(reference.pipelines["0"])
        let executor = HoldingExecutor(reference.executor)
        let batcher = ForwardBatcher(configuration: .init(maxDelay: .zero, maxConcurrentBatches: 1))
        let hidden = model.randomHidden(tokens: 2, seed: 9)
        let expertsPerBatch = try pipeline.route(hidden).tokensPerExpert.filter { $0 > 0 }.count
        try await withBatcher(batcher) {
            let (b, c) = try await Self.batchOfTwo(
                hidden, pipeline: pipeline, batcher: batcher, executor: executor, expertsPerBatch: expertsPerBatch)
            // B's client goes away.
            b.cancel()
            executor.release(holdLater: false)
            let expected = try await reference.forward(layer: "0", hidden: hidden)
            let answer = try await c.value
            // In a batch an expert multiplies more rows than alone (sgemm, not sgemv): equal within rounding.
            #expect(relativeError(answer.output.values, expected.output.values) <= 1e-6)
            // B and C reached the experts as one batch: A's expert calls, then one batch's, not one per call.
            #expect(executor.calls == 2 * expertsPerBatch, "expert calls: \(executor.calls)")
            // B's client left: B ends cancelled, its answer not delivered.
            await #expect(throws: CancellationError.self) { _ = try await b.value }
        }
    }

    @Test("a batch whose calls have all gone is cancelled: its expert calls see the cancellation")
    func abandonedBatchIsCancelled() async throws {
        /// Says, for each expert call, whether the task making it was cancelled.
        struct CancellationProbe<Inner: ExpertExecutor>: ExpertExecutor {
            let inner: Inner
            let seen: AsyncStream<Bool>.Continuation
            func compute(_ rows: ExpertRows) async throws -> Matrix {
                self.seen.yield(Task.isCancelled)
                return try await self.inner.compute(rows)
            }
        }
        let model = try SmallModel()
        defer { model.remove() }
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        let pipeline = try #require(reference.pipelines["0"])
        let (seen, seeing) = AsyncStream.makeStream(of: Bool.self)
        let executor = HoldingExecutor(CancellationProbe(inner: reference.executor, seen: seeing))
        let batcher = ForwardBatcher(configuration: .init(maxDelay: .zero, maxConcurrentBatches: 1))
        let hidden = model.randomHidden(tokens: 2, seed: 9)
        let expertsPerBatch = try pipeline.route(hidden).tokensPerExpert.filter { $0 > 0 }.count
        try await withBatcher(batcher) {
            let (b, c) = try await Self.batchOfTwo(
                hidden, pipeline: pipeline, batcher: batcher, executor: executor, expertsPerBatch: expertsPerBatch)
            // Both clients go: the batch has no call left.
            b.cancel()
            c.cancel()
            await #expect(throws: CancellationError.self) { _ = try await b.value }
            await #expect(throws: CancellationError.self) { _ = try await c.value }
            executor.release(holdLater: false)
            var observed: [Bool] = []
            for await cancelled in seen {
                observed.append(cancelled)
                if observed.count == 2 * expertsPerBatch { break }
            }
            // A's expert calls ran uncancelled; the abandoned batch's, cancelled.
            #expect(
                observed == Array(repeating: false, count: expertsPerBatch)
                    + Array(repeating: true, count: expertsPerBatch))
        }
    }

    @Test("a batch's failure reaches every call in it")
    func failuresReachEveryone() async throws {
        struct Broken: ExpertExecutor {
            func compute(_ rows: ExpertRows) async throws -> Matrix {
                throw RouterError.noReplica(rows.address)
            }
        }
        let model = try SmallModel()
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let pipeline = try MoELayerPipeline(checkpoint: checkpoint, layer: checkpoint.layer("0"))
        let batcher = ForwardBatcher(configuration: .init(maxConcurrentBatches: 1))
        let failures = try await withBatcher(batcher) {
            await withTaskGroup(of: Bool.self) { group in
                for index in 0..<6 {
                    group.addTask {
                        do {
                            _ = try await batcher.forward(
                                model.randomHidden(tokens: 2, seed: UInt64(index)), pipeline: pipeline,
                                executor: Broken())
                            return false
                        } catch { return error is RouterError }
                    }
                }
                return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
        }
        #expect(failures == 6)
    }
}
