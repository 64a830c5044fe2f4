import MoECore
import MoEModel
import MoEInProcess
import MoERuntime
import MoETestSupport
import Synchronization
import Testing

@Suite("reroute around an unreachable expert", .timeLimit(.minutes(5)))
struct RerouteTests {
    struct Unreachable: ExpertUnreachableError {
        let unreachableExpert: ExpertAddress?
    }

    /// Runs experts in process; `lost` answers unreachable, but only once every other expert call of the first
    /// routing has returned (so that the rows they computed are kept, whatever the order of completion). Counts the
    /// rows computed after the failure.
    final class LosingExecutor: ExpertExecutor {
        let inner: LocalExpertExecutor
        let lost: ExpertAddress
        let firstRoutingCalls: Int
        let changes = StateChanges()
        let state = Mutex((returned: 0, failed: false, rowsAfter: [Int: Int]()))

        init(inner: LocalExpertExecutor, lost: ExpertAddress, firstRoutingCalls: Int) {
            self.inner = inner
            self.lost = lost
            self.firstRoutingCalls = firstRoutingCalls
        }

        func compute(_ rows: ExpertRows) async throws -> Matrix {
            if rows.address == self.lost {
                _ = await self.changes.wait { self.state.withLock { $0.returned >= self.firstRoutingCalls } }
                self.state.withLock { $0.failed = true }
                throw Unreachable(unreachableExpert: self.lost)
            }
            let output = try await self.inner.compute(rows)
            self.state.withLock { state in
                if state.failed { state.rowsAfter[rows.expert, default: 0] += rows.count } else { state.returned += 1 }
            }
            self.changes.changed()
            return output
        }
    }

    @Test("only the rows the new routing adds are computed again, and the answer equals routing without the expert")
    func recomputesOnlyWhatItMust() async throws {
        let model = try SmallModel(
            shape: .init(experts: 8, topK: 2, hiddenSize: 32, intermediateSize: 48, layers: 1), seed: 3)
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let layer = checkpoint.layers[0]
        let lost = ExpertAddress(layer: layer.name, expert: 1)
        let hidden = model.randomHidden(tokens: 64, seed: 11)
        let reference = try InProcessMoE(checkpoint: checkpoint)
        let firstRouting = try reference.pipelines[layer.name]!.route(hidden)
        let plan = DispatchPlan(firstRouting)
        let tokensOfLost = plan.rowCount(ofExpert: 1)
        try #require(tokensOfLost > 0, "expert 1 must be among someone's top-2 for the test to mean anything")

        let executor = LosingExecutor(
            inner: reference.executor, lost: lost, firstRoutingCalls: plan.activeExperts.count - 1)
        let pipeline = try MoELayerPipeline(
            checkpoint: checkpoint, layer: layer, policy: RoutingPolicy(rerouteUnreachable: true))
        let result = try await pipeline.forward(hidden, executor: executor)

        // Each token that had chosen expert 1 takes its next-best expert: one new row each, nothing else again
        // (recomputing the layer would compute every row of the new routing: 64 × 2).
        let rowsAfter = executor.state.withLock { $0.rowsAfter }
        #expect(rowsAfter.values.reduce(0, +) == tokensOfLost)
        #expect(rowsAfter[1] == nil)
        #expect(result.reroutedExperts == [1])

        let masked = try InProcessMoE(checkpoint: checkpoint) { _ in RoutingPolicy(maskedExperts: [1]) }
        let expected = try await masked.forward(layer: layer.name, hidden: hidden)
        #expect(result.routing.topkIDs == expected.routing.topkIDs)
        // Rows computed in blocks of a different size: equal up to the kernels' rounding.
        #expect(relativeError(result.output.values, expected.output.values) <= 1e-6)
    }
}
