import RealModule
import Testing

@testable import MoECore

/// Naive reference: sort experts by (probability desc, index asc) in Double.
private func referenceRoute(logits: [Double], k: Int, renormalize: Bool) -> ([Int32], [Double]) {
    let maximum = logits.max()!
    let exps = logits.map { Double.exp($0 - maximum) }
    let sum = exps.reduce(0, +)
    let probabilities = exps.map { $0 / sum }
    let order = probabilities.indices.sorted { a, b in
        probabilities[a] != probabilities[b] ? probabilities[a] > probabilities[b] : a < b
    }
    let chosen = Array(order.prefix(k))
    var weights = chosen.map { probabilities[$0] }
    if renormalize {
        let total = weights.reduce(0, +)
        weights = weights.map { $0 / total }
    }
    return (chosen.map(Int32.init), weights)
}

@Suite("softmax top-k gate")
struct TopKGateTests {
    @Test("matches a naive reference", arguments: [(8, 1), (8, 2), (8, 8), (60, 4), (64, 6), (3, 2)], [false, true])
    func matchesReference(shape: (experts: Int, k: Int), renormalize: Bool) {
        var generator = SplitMix64Generator(seed: UInt64(shape.experts * 100 + shape.k))
        let tokens = 13
        let logits = (0..<(tokens * shape.experts)).map { _ in Float(generator.nextUnit() * 6 - 3) }
        let gate = TopKGate(numExperts: shape.experts, topK: shape.k, renormalize: renormalize)
        let decision = gate.route(logits: Matrix(rows: tokens, columns: shape.experts, values: logits))
        #expect(decision.tokenCount == tokens && decision.topK == shape.k)
        for token in 0..<tokens {
            let row = logits[(token * shape.experts)..<((token + 1) * shape.experts)].map(Double.init)
            let (ids, weights) = referenceRoute(logits: row, k: shape.k, renormalize: renormalize)
            let slots = (token * shape.k)..<((token + 1) * shape.k)
            #expect(Array(decision.topkIDs[slots]) == ids)
            for (got, want) in zip(decision.topkWeights[slots], weights) {
                #expect(abs(Double(got) - want) <= 1e-6 * max(1, want))
            }
        }
    }

    @Test("ties go to the lower expert index")
    func ties() {
        let gate = TopKGate(numExperts: 6, topK: 3, renormalize: false)
        let decision = gate.route(logits: Matrix(rows: 1, columns: 6, values: [1, 5, 1, 5, 1, 5]))
        #expect(decision.topkIDs == [1, 3, 5])
        let allEqual = TopKGate(numExperts: 4, topK: 2, renormalize: true)
            .route(logits: Matrix(rows: 1, columns: 4, values: [0, 0, 0, 0]))
        #expect(allEqual.topkIDs == [0, 1])
        #expect(allEqual.topkWeights == [0.5, 0.5])
    }

    @Test("k = 1 picks the argmax with its probability, renormalised to 1 when asked")
    func topOne() {
        let logits = Matrix(rows: 2, columns: 3, values: [0, 2, 1, 3, 0, 3])
        let raw = TopKGate(numExperts: 3, topK: 1, renormalize: false).route(logits: logits)
        #expect(raw.topkIDs == [1, 0])
        #expect(raw.topkWeights[0] < 1 && raw.topkWeights[0] > 0.6)
        let renormalized = TopKGate(numExperts: 3, topK: 1, renormalize: true).route(logits: logits)
        #expect(renormalized.topkWeights == [1, 1])
    }

    @Test("k = E keeps every expert, ordered by score, weights summing to 1")
    func allExperts() {
        let decision = TopKGate(numExperts: 4, topK: 4, renormalize: false)
            .route(logits: Matrix(rows: 1, columns: 4, values: [0.5, -1, 2, 0.5]))
        #expect(decision.topkIDs == [2, 0, 3, 1])
        #expect(abs(decision.topkWeights.reduce(0, +) - 1) < 1e-6)
        #expect(decision.tokensPerExpert == [1, 1, 1, 1])
    }

    @Test("masked experts are never chosen; the rest are chosen and weighted as if the masked ones did not exist")
    func masking() {
        var generator = SplitMix64Generator(seed: 77)
        let logits = (0..<(9 * 8)).map { _ in Float(generator.nextUnit() * 4 - 2) }
        let gate = TopKGate(numExperts: 8, topK: 2, renormalize: true)
        let decision = gate.route(logits: Matrix(rows: 9, columns: 8, values: logits), masked: [0, 5])
        for token in 0..<9 {
            let row = logits[(token * 8)..<(token * 8 + 8)].map(Double.init)
            // The reference: drop experts 0 and 5, route among the rest (renormalised top-2 of softmax).
            let kept = [1, 2, 3, 4, 6, 7]
            let (ids, weights) = referenceRoute(logits: kept.map { row[$0] }, k: 2, renormalize: true)
            #expect(decision.topkIDs[(token * 2)..<(token * 2 + 2)].map(Int.init) == ids.map { kept[Int($0)] })
            for (got, want) in zip(decision.topkWeights[(token * 2)..<(token * 2 + 2)], weights) {
                #expect(abs(Double(got) - want) <= 1e-6)
            }
        }
    }
}
