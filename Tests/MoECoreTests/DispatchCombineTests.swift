import Testing

@testable import MoECore

@Suite("dispatch plan and combine")
struct DispatchCombineTests {
    static func randomDecision(tokens: Int, experts: Int, k: Int, seed: UInt64) -> RoutingDecision {
        var generator = SplitMix64Generator(seed: seed)
        let logits = (0..<(tokens * experts)).map { _ in Float(generator.nextUnit() * 4 - 2) }
        return TopKGate(numExperts: experts, topK: k, renormalize: true)
            .route(logits: Matrix(rows: tokens, columns: experts, values: logits))
    }

    @Test(
        "each expert's block holds exactly its tokens, in token order",
        arguments: [(1, 8, 2), (7, 8, 2), (64, 4, 4), (33, 16, 1)])
    func planGroupsRows(shape: (tokens: Int, experts: Int, k: Int)) {
        let decision = Self.randomDecision(tokens: shape.tokens, experts: shape.experts, k: shape.k, seed: 7)
        let plan = DispatchPlan(decision)
        #expect(plan.expertOffsets.last == shape.tokens * shape.k)
        for expert in 0..<shape.experts {
            let expected = (0..<shape.tokens).filter { token in
                decision.topkIDs[(token * shape.k)..<((token + 1) * shape.k)].contains(Int32(expert))
            }
            #expect(plan.tokens(ofExpert: expert).map(Int.init) == expected)
            #expect(plan.rowCount(ofExpert: expert) == decision.tokensPerExpert[expert])
        }
        for slot in 0..<(shape.tokens * shape.k) {
            let expert = Int(decision.topkIDs[slot])
            let row = Int(plan.slotRows[slot])
            #expect(plan.rowTokens[plan.expertOffsets[expert] + row] == Int32(slot / shape.k))
        }
    }

    @Test("gather + per-expert map + combine equals the naive weighted sum")
    func combineMatchesNaive() {
        let tokens = 19, experts = 6, k = 2, hidden = 5
        let decision = Self.randomDecision(tokens: tokens, experts: experts, k: k, seed: 11)
        let plan = DispatchPlan(decision)
        var generator = SplitMix64Generator(seed: 3)
        let hiddenStates = Matrix(
            rows: tokens, columns: hidden, values: (0..<(tokens * hidden)).map { _ in Float(generator.nextUnit()) })
        // Expert e multiplies its rows by (e + 1) and adds e.
        let expertFunction = { (expert: Int, value: Float) in value * Float(expert + 1) + Float(expert) }
        let outputs: [Matrix?] = (0..<experts).map { expert in
            guard plan.rowCount(ofExpert: expert) > 0 else { return nil }
            var block = plan.gather(hiddenStates, expert: expert)
            block.values = block.values.map { expertFunction(expert, $0) }
            return block
        }
        let combined = Combiner.combine(decision, plan: plan, expertOutputs: outputs, hiddenSize: hidden)
        for token in 0..<tokens {
            for column in 0..<hidden {
                var expected: Float = 0
                for slot in 0..<k {
                    let expert = Int(decision.topkIDs[token * k + slot])
                    expected +=
                        decision.topkWeights[token * k + slot]
                        * expertFunction(expert, hiddenStates[token, column])
                }
                #expect(abs(combined[token, column] - expected) <= 1e-6 * max(1, abs(expected)))
            }
        }
    }
}
