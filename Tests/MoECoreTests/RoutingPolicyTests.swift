import Testing

@testable import MoECore

@Suite("routing strategies, capacity and balance telemetry")
struct RoutingPolicyTests {
    static func logits(tokens: Int, experts: Int, seed: UInt64) -> Matrix {
        var generator = SplitMix64Generator(seed: seed)
        return Matrix(
            rows: tokens, columns: experts,
            values: (0..<(tokens * experts)).map { _ in Float(generator.nextUnit() * 6 - 3) })
    }

    static let gate = TopKGate(numExperts: 8, topK: 2, renormalize: true)
    static let fourExperts = TopKGate(numExperts: 4, topK: 2, renormalize: true)

    @Test("noisy top-k: h = l + σ·N(0,1) seeded; top-k of h; softmax over the kept h")
    func noisyTopK() throws {
        let logits = Self.logits(tokens: 16, experts: 8, seed: 1)
        let policy = RoutingPolicy(strategy: .noisyTopK(noiseStd: 0.7))
        let decision = try Self.gate.route(
            RoutingInput(logits: logits, sequenceLength: 16, shape: [16, 8], noiseSeed: 42), policy: policy)
        for token in 0..<16 {
            let noisy = (0..<8).map {
                logits[token, $0] + 0.7 * SplitMix64.gaussian(seed: 42, token: token, expert: $0)
            }
            let expected = TopKGate.topIndices(of: noisy, k: 2)
            #expect(decision.topkIDs[(token * 2)..<(token * 2 + 2)].map(Int.init) == expected)
            let weights = TopKGate.softmax(expected.map { noisy[$0] }[...])
            #expect(Array(decision.topkWeights[(token * 2)..<(token * 2 + 2)]) == weights)
        }
        let again = try Self.gate.route(
            RoutingInput(logits: logits, sequenceLength: 16, shape: [16, 8], noiseSeed: 42), policy: policy)
        let otherSeed = try Self.gate.route(
            RoutingInput(logits: logits, sequenceLength: 16, shape: [16, 8], noiseSeed: 43), policy: policy)
        #expect(again == decision)
        #expect(otherSeed.topkIDs != decision.topkIDs)
        // The noise is standard normal: mean ≈ 0, variance ≈ 1 over many draws.
        let draws = (0..<20_000).map { Double(SplitMix64.gaussian(seed: 9, token: $0 / 8, expert: $0 % 8)) }
        let mean = draws.reduce(0, +) / Double(draws.count)
        let variance = draws.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(draws.count)
        #expect(abs(mean) < 0.03 && abs(variance - 1) < 0.05)
    }

    @Test("hash routing: expert = splitmix64(token id) mod E, weight 1; token ids required")
    func hash() throws {
        let logits = Self.logits(tokens: 5, experts: 8, seed: 2)
        let ids: [Int64] = [0, 1, 2, 99, -7]
        let decision = try Self.gate.route(
            RoutingInput(logits: logits, sequenceLength: 5, shape: [5, 8], tokenIDs: ids),
            policy: .init(strategy: .hash))
        #expect(decision.topK == 1)
        #expect(decision.topkIDs == ids.map { Int32(SplitMix64.mix(UInt64(bitPattern: $0)) % 8) })
        #expect(decision.topkWeights == [1, 1, 1, 1, 1])
        #expect(throws: RoutingError.missingTokenIDs(tokens: 5)) {
            try Self.gate.route(
                RoutingInput(logits: logits, sequenceLength: 5, shape: [5, 8]), policy: .init(strategy: .hash))
        }
        #expect(throws: RoutingError.tokenIDCount(expected: 5, got: 2)) {
            try Self.gate.route(
                RoutingInput(logits: logits, sequenceLength: 5, shape: [5, 8], tokenIDs: [1, 2]),
                policy: .init(strategy: .hash))
        }
    }

    @Test("expert choice: each expert takes its ⌈T·c/E⌉ best tokens; decode-shaped batches are refused")
    func expertChoice() throws {
        let tokens = 12, capacity = 3  // ⌈12 · 2 / 8⌉
        let logits = Self.logits(tokens: tokens, experts: 8, seed: 3)
        let decision = try Self.gate.route(
            RoutingInput(logits: logits, sequenceLength: tokens, shape: [tokens, 8]),
            policy: .init(strategy: .expertChoice(capacityFactor: 2)))
        #expect(decision.tokensPerExpert == [Int](repeating: capacity, count: 8))
        let probabilities = (0..<tokens).map { TopKGate.softmax(logits.row($0)) }
        for expert in 0..<8 {
            let column = (0..<tokens).map { probabilities[$0][expert] }
            let best = Set(TopKGate.topIndices(of: column, k: capacity))
            for token in 0..<tokens {
                let slots = (token * decision.topK)..<((token + 1) * decision.topK)
                let chosen = slots.first { decision.topkIDs[$0] == Int32(expert) }
                #expect((chosen != nil) == best.contains(token))
                if let slot = chosen { #expect(decision.topkWeights[slot] == column[token]) }
            }
        }
        #expect(throws: RoutingError.expertChoiceNeedsPrefill(shape: [4, 1, 8])) {
            try Self.gate.route(
                RoutingInput(logits: Self.logits(tokens: 4, experts: 8, seed: 4), sequenceLength: 1, shape: [4, 1, 8]),
                policy: .init(strategy: .expertChoice(capacityFactor: 1)))
        }
    }

    @Test("capacity with drop: at most ⌈c·T·k/E⌉ rows per expert, first choices first, overflow dropped")
    func capacityDrop() throws {
        // Every token prefers expert 0, then expert 1.
        let logits = Matrix(rows: 6, columns: 4, values: (0..<6).flatMap { _ in [Float(3), 2, 0, -1] })
        let policy = RoutingPolicy(capacity: CapacityLimit(factor: 1, overflow: .drop))  // C = ⌈6·2/4⌉ = 3
        let decision = try Self.fourExperts.route(
            RoutingInput(logits: logits, sequenceLength: 6, shape: [6, 4]), policy: policy)
        #expect(decision.tokensPerExpert == [3, 3, 0, 0])
        #expect(decision.droppedSlots == 6)
        #expect(Array(decision.topkIDs[0..<6]) == [0, 1, 0, 1, 0, 1])
        #expect(Array(decision.topkIDs[6..<12]) == [-1, -1, -1, -1, -1, -1])
        #expect(decision.topkWeights[6..<12].allSatisfy { $0 == 0 })
    }

    @Test(
        "capacity with spill: overflow goes to the next-best expert with room, weights renormalised over the final set")
    func capacitySpill() throws {
        let logits = Matrix(rows: 6, columns: 4, values: (0..<6).flatMap { _ in [Float(3), 2, 0, -1] })
        let policy = RoutingPolicy(capacity: CapacityLimit(factor: 1, overflow: .spill))
        let decision = try Self.fourExperts.route(
            RoutingInput(logits: logits, sequenceLength: 6, shape: [6, 4]), policy: policy)
        #expect(decision.tokensPerExpert.allSatisfy { $0 <= 3 })
        #expect(decision.droppedSlots == 0)
        #expect(Array(decision.topkIDs[6..<12]) == [2, 3, 2, 3, 2, 3])
        let p = TopKGate.softmax([3, 2, 0, -1][...])
        #expect(abs(decision.topkWeights[6] - p[2] / (p[2] + p[3])) < 1e-6)
        #expect(abs(decision.topkWeights[6] + decision.topkWeights[7] - 1) < 1e-6)
    }

    @Test("Switch per-sequence capacity: running count per sequence; dropped weight moves to the residual")
    func sequenceCapacity() throws {
        let top1 = TopKGate(numExperts: 2, topK: 1, renormalize: false)
        let logits = Matrix(rows: 6, columns: 2, values: (0..<6).flatMap { _ in [Float(1), 0] })  // all to expert 0
        let decision = try top1.route(
            RoutingInput(logits: logits, sequenceLength: 3, shape: [2, 3, 2]),
            policy: RoutingPolicy(sequenceCapacity: 2))
        #expect(decision.topkIDs == [0, 0, -1, 0, 0, -1])
        let p = TopKGate.softmax([1, 0][...])[0]
        #expect(decision.residualWeights == [0, 0, p, 0, 0, p])
    }

    @Test("balance telemetry: f, P, aux loss, z-loss, balancedness, dead experts; merging equals one big batch")
    func balance() {
        let logits = Matrix(rows: 2, columns: 4, values: [0, 0, 0, 0, 2, 0, 0, 0])
        let decision = RoutingDecision(
            tokenCount: 2, topK: 2, numExperts: 4, topkIDs: [0, 1, 0, -1], topkWeights: [0.5, 0.5, 1, 0])
        let stats = BalanceStats(logits: logits, decision: decision)
        #expect(stats.tokensPerExpert == [2, 1, 0, 0])
        #expect(stats.routedFractions == [2.0 / 3, 1.0 / 3, 0, 0])
        let e2 = 7.38905609893065
        let p0 = (0.25 + e2 / (e2 + 3)) / 2, p1 = (0.25 + 1 / (e2 + 3)) / 2
        #expect(abs(stats.meanProbabilities[0] - p0) < 1e-9 && abs(stats.meanProbabilities[1] - p1) < 1e-9)
        #expect(abs(stats.auxLoss - 4 * (2.0 / 3 * p0 + 1.0 / 3 * p1)) < 1e-9)
        let lse0 = 1.3862943611198906, lse1 = 2 + 0.3407529539131311  // log 4; 2 + log(1 + 3e⁻²)
        #expect(abs(stats.zLoss - (lse0 * lse0 + lse1 * lse1) / 2) < 1e-6)
        #expect(stats.balancedness == 0.375)  // mean 0.75 / max 2
        #expect(stats.deadExperts == [2, 3])
        #expect(stats.droppedSlots == 1)

        var merged = BalanceStats(numExperts: 4)
        merged.merge(stats)
        merged.merge(stats)
        let doubled = BalanceStats(
            logits: Matrix(rows: 4, columns: 4, values: logits.values + logits.values),
            decision: RoutingDecision(
                tokenCount: 4, topK: 2, numExperts: 4, topkIDs: decision.topkIDs + decision.topkIDs,
                topkWeights: decision.topkWeights + decision.topkWeights))
        #expect(merged.tokensPerExpert == doubled.tokensPerExpert && merged.tokens == 4)
        #expect(abs(merged.auxLoss - doubled.auxLoss) < 1e-12 && abs(merged.zLoss - doubled.zLoss) < 1e-12)
    }
}
