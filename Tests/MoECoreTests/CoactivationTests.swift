import Testing

@testable import MoECore

@Suite("co-activation counts")
struct CoactivationTests {
    @Test("C[a, b] counts the tokens whose chosen experts include both, as a naive E × E count does")
    func matchesNaiveCount() {
        var generator = SplitMix64Generator(seed: 3)
        let (tokens, experts, k) = (200, 8, 3)
        var ids = [Int32]()
        for _ in 0..<tokens {
            var chosen = Set<Int32>()
            while chosen.count < k { chosen.insert(Int32(generator.nextUnit() * Double(experts))) }
            var slots = Array(chosen).shuffled(using: &generator)
            if generator.nextUnit() < 0.2 { slots[0] = RoutingDecision.dropped }  // a dropped slot counts for nothing
            ids += slots
        }
        let decision = RoutingDecision(
            tokenCount: tokens, topK: k, numExperts: experts, topkIDs: ids,
            topkWeights: [Float](repeating: 0.3, count: ids.count))
        var naive = [[Int]](repeating: [Int](repeating: 0, count: experts), count: experts)
        for token in 0..<tokens {
            let slots = ids[(token * k)..<((token + 1) * k)].filter { $0 >= 0 }.map(Int.init)
            for a in slots { for b in slots where a != b { naive[a][b] += 1 } }
        }
        var counts = Coactivation(experts: experts)
        counts.add(decision)
        #expect(counts.tokens == tokens)
        for a in 0..<experts {
            for b in 0..<experts { #expect(counts.count(a, b) == naive[a][b], "(\(a), \(b))") }
        }
        let pairs = counts.pairs
        #expect(pairs.allSatisfy { $0.a < $0.b && $0.tokens == naive[$0.a][$0.b] })
        #expect(zip(pairs, pairs.dropFirst()).allSatisfy { $0.tokens >= $1.tokens })
        #expect(pairs.reduce(0) { $0 + $1.tokens } == naive.joined().reduce(0, +) / 2)
    }

    @Test("merging sums counts and tokens; pairs of an expert with itself or out of range are ignored")
    func mergeAndAdd() {
        var a = Coactivation(experts: 4), b = Coactivation(experts: 4)
        a.add(0, 1, count: 2)
        b.add(1, 0, count: 3)
        b.add(2, 2, count: 5)
        b.add(3, 9, count: 5)
        b.addTokens(7)
        a.merge(b)
        #expect(a.count(0, 1) == 5 && a.count(1, 0) == 5 && a.count(2, 2) == 0 && a.tokens == 7)
        #expect(a.pairs.map { [$0.a, $0.b, $0.tokens] } == [[0, 1, 5]])
    }
}
