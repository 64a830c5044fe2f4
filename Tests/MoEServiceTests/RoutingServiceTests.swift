import GRPCCore
import MoECore
import MoEModel
import MoEInProcess
import MoEProto
import MoERouter
import MoERuntime
import MoEServing
import MoETestSupport
import MoEWire
import Testing

@Suite("routing policies and balance telemetry through the router (in-process transport)")
struct RoutingServiceTests {
    static func request(
        hidden: Moemesh_V1_Tensor, tokenIDs: [Int64] = [], returnBalance: Bool = false
    ) -> Moemesh_V1_ForwardRequest {
        var request = Moemesh_V1_ForwardRequest()
        request.layer = "0"
        request.hiddenStates = hidden
        request.returnRouting = true
        request.tokenIds = tokenIDs
        request.returnBalance = returnBalance
        return request
    }

    @Test("hash routing sends each token to splitmix64(id) mod E; without token ids the call is refused")
    func hashRouting() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        try await withLoopbackMesh(model: model, routing: RoutingConfiguration(strategy: .hash)) { router, _ in
            let ids: [Int64] = [5, 6, 7]
            let response = try await router.forward(Self.request(hidden: .rows(SmallModelRows.rows), tokenIDs: ids))
            #expect(response.routing.topK == 1)
            #expect(response.routing.topkIds == ids.map { Int32(SplitMix64.mix(UInt64($0)) % 4) })
            do {
                _ = try await router.forward(Self.request(hidden: .rows(SmallModelRows.rows)))
                Issue.record("hash routing without token ids was accepted")
            } catch let error as RPCError {
                #expect(error.code == .invalidArgument)
                #expect(error.message == "token_ids: hash routing needs one token id per token: expected 3, got none")
            }
            let description = try await router.describeModel(Moemesh_V1_DescribeModelRequest())
            #expect(description.routing == "hash")
        }
    }

    @Test("expert choice serves a prefill batch and refuses a decode-shaped one")
    func expertChoice() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        try await withLoopbackMesh(model: model, routing: RoutingConfiguration(strategy: .expertChoice)) { router, _ in
            let prefill = model.randomHidden(tokens: 8)
            let response = try await router.forward(
                Self.request(hidden: Moemesh_V1_Tensor(prefill, shape: [1, 8, 32], dtype: .f32)))
            // c = 1: each of the 4 experts takes ⌈8/4⌉ = 2 tokens.
            var counts = [Int](repeating: 0, count: 4)
            for id in response.routing.topkIds where id >= 0 { counts[Int(id)] += 1 }
            #expect(counts == [2, 2, 2, 2])
            do {
                _ = try await router.forward(
                    Self.request(hidden: Moemesh_V1_Tensor(prefill, shape: [8, 1, 32], dtype: .f32)))
                Issue.record("expert choice accepted a decode batch")
            } catch let error as RPCError {
                #expect(error.code == .invalidArgument)
                #expect(error.message.hasPrefix("expert-choice routing is not causal and serves prefill only"))
            }
        }
    }

    @Test(
        "top-2 and hierarchical routing run through the router, which describes them; options that do not fit are named"
    )
    func routingVariants() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let topTwo = RoutingConfiguration(strategy: .topTwo, seed: 3, secondExpert: .random)
        try await withLoopbackMesh(model: model, routing: topTwo) { router, _ in
            let response = try await router.forward(Self.request(hidden: .rows(SmallModelRows.rows)))
            #expect(response.routing.topK == 2)
            #expect(response.routing.topkIds.enumerated().allSatisfy { $0.offset % 2 == 1 || $0.element >= 0 })
            let description = try await router.describeModel(Moemesh_V1_DescribeModelRequest())
            #expect(description.routing == "top-2(second expert random, seed 3)")
        }
        let hierarchical = RoutingConfiguration(strategy: .hierarchical, groups: 2, keptGroups: 1, groupScore: .top2Sum)
        #expect(hierarchical.problem(for: checkpoint.layers) == nil)
        try await withLoopbackMesh(model: model, routing: hierarchical) { router, _ in
            let response = try await router.forward(Self.request(hidden: .rows(SmallModelRows.rows)))
            // Two groups of two experts, one kept: both of a token's experts are in the same group.
            let ids = response.routing.topkIds
            for token in 0..<(ids.count / 2) { #expect(ids[2 * token] / 2 == ids[2 * token + 1] / 2) }
            let description = try await router.describeModel(Moemesh_V1_DescribeModelRequest())
            #expect(description.routing == "hierarchical(2 groups, keep 1, by top2-sum)")
        }
        let misfit = RoutingConfiguration(strategy: .hierarchical, groups: 4, keptGroups: 1)
        #expect(
            misfit.problem(for: checkpoint.layers)
                == "layer 0: hierarchical routing: expected a group count that divides the layer's 4 experts and "
                + "kept groups holding at least top-k (2) experts, got 4 groups, 1 kept")
    }

    @Test("with dynamic batching on, concurrent calls each get the in-process answer for their own rows")
    func batchedCallsMatchReference() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        let inputs = (0..<12).map { model.randomHidden(tokens: 1 + $0 % 4, seed: UInt64(50 + $0)) }
        try await withLoopbackMesh(model: model, batching: .init(maxDelay: .milliseconds(5))) { router, _ in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for hidden in inputs {
                    group.addTask {
                        let response = try await router.forward(
                            Self.request(hidden: .rows(hidden), returnBalance: true))
                        let expected = try await reference.forward(layer: "0", hidden: hidden)
                        let output = response.output.data.withUnsafeBytes { DType.f32.decodeFloats($0) }
                        #expect(relativeError(output, expected.output.values) <= 1e-6)
                        #expect(response.routing.topkIds == expected.routing.topkIDs)
                        #expect(response.balance.tokens == Int64(hidden.rows))
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    @Test("balance telemetry: per request on demand, and aggregated by GetBalance")
    func balance() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        try await withLoopbackMesh(model: model) { router, _ in
            let first = try await router.forward(
                Self.request(hidden: .rows(model.randomHidden(tokens: 5, seed: 1)), returnBalance: true))
            let second = try await router.forward(
                Self.request(hidden: .rows(model.randomHidden(tokens: 9, seed: 2)), returnBalance: true))
            #expect(first.balance.tokens == 5 && second.balance.tokens == 9)
            #expect(first.balance.tokensPerExpert.reduce(0, +) == 10)  // T · k
            #expect(first.balance.routedFraction.count == 4 && first.balance.meanProbability.count == 4)
            #expect(first.balance.balancedness > 0 && first.balance.balancedness <= 1)
            let noBalance = try await router.forward(
                Self.request(hidden: .rows(model.randomHidden(tokens: 2, seed: 3))))
            #expect(!noBalance.hasBalance)

            let aggregate = try await router.getBalance(Moemesh_V1_GetBalanceRequest())
            #expect(aggregate.layers.map(\.layer) == ["0"])
            let layer = try #require(aggregate.layers.first)
            #expect(layer.tokens == 16)
            let expected = zip(first.balance.tokensPerExpert, second.balance.tokensPerExpert).map { $0 + $1 }
            // + the 2-token call
            #expect(zip(layer.tokensPerExpert, expected).allSatisfy { $0 - $1 >= 0 && $0 - $1 <= 4 })
            #expect(layer.tokensPerExpert.reduce(0, +) == 32)
            // Reading with reset starts a new window.
            var reset = Moemesh_V1_GetBalanceRequest()
            reset.reset = true
            #expect(try await router.getBalance(reset).layers.first?.tokens == 16)
            #expect(try await router.getBalance(Moemesh_V1_GetBalanceRequest()).layers.isEmpty)
            do {
                var request = Moemesh_V1_GetBalanceRequest()
                request.layer = "7"
                _ = try await router.getBalance(request)
                Issue.record("unknown layer accepted")
            } catch let error as RPCError {
                #expect(error.code == .notFound)
            }
        }
    }
}
