import Testing

@testable import MoECore

/// Naive restatements of top-2 gating with a second-expert policy and of two-level routing, in f64 where it
/// matters, against the router's code.
@Suite("routing variants: top-2 second-expert policies and hierarchical routing")
struct RoutingVariantsTests {
    static let gate = TopKGate(numExperts: 8, topK: 2, renormalize: true)

    static func route(_ logits: Matrix, _ strategy: RoutingStrategy, seed: UInt64 = 5, masked: Set<Int> = [])
        throws -> RoutingDecision
    {
        try Self.gate.route(
            RoutingInput(logits: logits, sequenceLength: logits.rows, shape: [logits.rows, 8], noiseSeed: seed),
            policy: RoutingPolicy(strategy: strategy, maskedExperts: masked))
    }

    /// softmax in f64.
    static func softmax(_ values: [Float]) -> [Double] {
        let top = Double(values.max()!)
        let e = values.map { exp64(Double($0) - top) }
        let sum = e.reduce(0, +)
        return e.map { $0 / sum }
    }

    static func argmax(_ values: [Double], excluding: Int? = nil) -> Int {
        var best = -1
        for index in values.indices where index != excluding && (best < 0 || values[index] > values[best]) {
            best = index
        }
        return best
    }

    @Test(
        "top-2: e₁ = argmax p, e₂ the next or by Gumbel-max (sampling), w = p / (p₁ + p₂); random and gshard keep e₂ when u < 2·w₂",
        arguments: SecondExpertPolicy.allCases)
    func topTwoMatchesNaive(policy: SecondExpertPolicy) throws {
        let logits = RoutingPolicyTests.logits(tokens: 64, experts: 8, seed: 3)
        let decision = try Self.route(logits, .topTwo(secondExpert: policy), seed: 17)
        #expect(decision.topK == 2)
        var kept = 0
        for token in 0..<64 {
            let row = Array(logits.row(token))
            let p = Self.softmax(row)
            let first = Self.argmax(p)
            let second =
                policy == .sampling
                ? Self.argmax(
                    row.indices.map { Double(row[$0]) + Double(SplitMix64.gumbel(seed: 17, token: token, expert: $0)) },
                    excluding: first)
                : Self.argmax(p, excluding: first)
            let (w1, w2) = (p[first] / (p[first] + p[second]), p[second] / (p[first] + p[second]))
            var keep = true
            if policy == .random || policy == .gshard {
                keep = SplitMix64.uniform(seed: 17, token: token, stream: 0x5EC0_4D) < 2 * w2
            }
            if keep { kept += 1 }
            #expect(decision.topkIDs[2 * token] == Int32(first))
            #expect(decision.topkIDs[2 * token + 1] == (keep ? Int32(second) : RoutingDecision.dropped))
            let expected = keep ? (w1, w2) : (policy == .gshard ? w1 : 1, 0)
            #expect(abs(Double(decision.topkWeights[2 * token]) - expected.0) < 1e-6)
            #expect(abs(Double(decision.topkWeights[2 * token + 1]) - expected.1) < 1e-6)
        }
        if policy == .random || policy == .gshard { #expect(kept > 0 && kept < 64) } else { #expect(kept == 64) }
    }

    @Test("random/gshard keep the second expert with probability min(1, 2·w₂): over 4,000 seeded tokens, within 0.03")
    func keepRate() throws {
        let logits = RoutingPolicyTests.logits(tokens: 4000, experts: 8, seed: 4)
        let decision = try Self.route(logits, .topTwo(secondExpert: .random), seed: 99)
        var expected = 0.0
        for token in 0..<4000 {
            let p = Self.softmax(Array(logits.row(token)))
            let first = Self.argmax(p), second = Self.argmax(p, excluding: first)
            expected += min(1, 2 * p[second] / (p[first] + p[second]))
        }
        let kept = (0..<4000).filter { decision.topkIDs[2 * $0 + 1] >= 0 }.count
        #expect(abs(Double(kept) / 4000 - expected / 4000) < 0.03)
    }

    @Test("sampling draws e₂ with probability p_e / Σ_{e ≠ e₁} p (Gumbel-max), over 6,000 seeds: within 0.02")
    func samplingFollowsTheSoftmax() throws {
        let row: [Float] = [2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 0.2, 0.8]
        let logits = Matrix(rows: 1, columns: 8, values: row)
        var counts = [Int](repeating: 0, count: 8)
        for seed in 0..<6000 {
            let decision = try Self.route(logits, .topTwo(secondExpert: .sampling), seed: UInt64(seed))
            #expect(decision.topkIDs[0] == 0)
            counts[Int(decision.topkIDs[1])] += 1
        }
        let p = Self.softmax(row)
        let rest = 1 - p[0]
        #expect(counts[0] == 0)
        for expert in 1..<8 {
            #expect(abs(Double(counts[expert]) / 6000 - p[expert] / rest) < 0.02, "expert \(expert)")
        }
    }

    @Test("top-2 never chooses a masked expert and refuses a one-expert layer")
    func topTwoMaskedAndTooSmall() throws {
        let logits = RoutingPolicyTests.logits(tokens: 32, experts: 8, seed: 6)
        for policy in SecondExpertPolicy.allCases {
            let decision = try Self.route(logits, .topTwo(secondExpert: policy), masked: [0, 3])
            #expect(!decision.topkIDs.contains(0) && !decision.topkIDs.contains(3))
        }
        let single = TopKGate(numExperts: 1, topK: 1, renormalize: false)
        #expect(throws: RoutingError.topTwoNeedsTwoExperts(experts: 1)) {
            try single.route(
                RoutingInput(logits: Matrix(rows: 1, columns: 1, values: [0]), sequenceLength: 1, shape: [1, 1]),
                policy: RoutingPolicy(strategy: .topTwo(secondExpert: .all)))
        }
    }

    @Test(
        "hierarchical: groups scored by their best (or top-two sum) member, the best M kept, the gate's top-k inside",
        arguments: [TopKGate.GroupLimit.GroupScore.max, .sumOfTopTwo], [1, 2])
    func hierarchicalMatchesNaive(groupScore: TopKGate.GroupLimit.GroupScore, keptGroups: Int) throws {
        let logits = RoutingPolicyTests.logits(tokens: 48, experts: 8, seed: 7)
        let limit = TopKGate.GroupLimit(groups: 4, keptGroups: keptGroups, groupScore: groupScore)
        let decision = try Self.route(logits, .hierarchical(limit))
        for token in 0..<48 {
            let p = Self.softmax(Array(logits.row(token)))
            let groupScores = (0..<4).map { group -> Double in
                let members = [p[2 * group], p[2 * group + 1]]
                return groupScore == .max ? members.max()! : members[0] + members[1]
            }
            let keptSet = Set(groupScores.indices.sorted { groupScores[$0] > groupScores[$1] }.prefix(keptGroups))
            var candidates = p
            for expert in 0..<8 where !keptSet.contains(expert / 2) { candidates[expert] = -1 }
            let first = Self.argmax(candidates), second = Self.argmax(candidates, excluding: first)
            #expect(decision.topkIDs[2 * token] == Int32(first) && decision.topkIDs[2 * token + 1] == Int32(second))
            let sum = p[first] + p[second]
            #expect(abs(Double(decision.topkWeights[2 * token]) - p[first] / sum) < 1e-6)
            #expect(abs(Double(decision.topkWeights[2 * token + 1]) - p[second] / sum) < 1e-6)
        }
    }

    @Test("hierarchical routing refuses groups that do not divide the experts or keep fewer experts than top-k")
    func hierarchicalRefusals() {
        let logits = RoutingPolicyTests.logits(tokens: 2, experts: 8, seed: 8)
        #expect(throws: RoutingError.invalidHierarchy(experts: 8, topK: 2, groups: 3, keptGroups: 1)) {
            try Self.route(logits, .hierarchical(.init(groups: 3, keptGroups: 1, groupScore: .max)))
        }
        #expect(throws: RoutingError.invalidHierarchy(experts: 8, topK: 2, groups: 8, keptGroups: 1)) {
            try Self.route(logits, .hierarchical(.init(groups: 8, keptGroups: 1, groupScore: .max)))
        }
        #expect(
            RoutingError.invalidHierarchy(experts: 8, topK: 2, groups: 3, keptGroups: 1).description.contains(
                "got 3 groups, 1 kept"))
    }
}

#if canImport(Glibc)
    import Glibc
    private func exp64(_ x: Double) -> Double { Glibc.exp(x) }
#else
    import Darwin
    private func exp64(_ x: Double) -> Double { Darwin.exp(x) }
#endif
