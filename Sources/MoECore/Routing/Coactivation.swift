/// How often each pair of a layer's experts is chosen for the same token: `C[a, b]` (a < b) counts the tokens whose
/// chosen experts include both a and b (dropped slots aside). Kept sparse: a token adds `k(k − 1)/2` pairs, so a
/// window touches far fewer than the `E²/2` cells of a 1,000-expert layer.
public struct Coactivation: Sendable, Equatable {
    public let experts: Int
    /// `a · experts + b` (a < b) → tokens.
    public private(set) var counts: [Int: Int] = [:]
    /// Tokens counted (with or without a pair).
    public private(set) var tokens = 0

    public init(experts: Int) { self.experts = experts }

    /// Counts every token of `decision`.
    public mutating func add(_ decision: RoutingDecision) {
        let k = decision.topK
        for token in 0..<decision.tokenCount {
            let chosen = Set(decision.topkIDs[(token * k)..<((token + 1) * k)].map(Int.init).filter { $0 >= 0 })
                .sorted()
            for (index, a) in chosen.enumerated() {
                for b in chosen[(index + 1)...] { self.counts[a * self.experts + b, default: 0] += 1 }
            }
        }
        self.tokens += decision.tokenCount
    }

    /// Adds `count` tokens to the pair (a, b), in either order; a pair of one expert with itself is ignored.
    public mutating func add(_ a: Int, _ b: Int, count: Int) {
        guard a != b, count > 0, (0..<self.experts).contains(a), (0..<self.experts).contains(b) else { return }
        self.counts[min(a, b) * self.experts + max(a, b), default: 0] += count
    }

    /// Counts `count` more tokens (without pairs: a decode token with one expert, or pairs added one by one).
    public mutating func addTokens(_ count: Int) { self.tokens += max(0, count) }

    /// Adds another count of the same layer.
    public mutating func merge(_ other: Coactivation) {
        precondition(other.experts == self.experts, "co-activation: merging layers of different widths")
        for (cell, count) in other.counts { self.counts[cell, default: 0] += count }
        self.tokens += other.tokens
    }

    /// Tokens that chose both `a` and `b`.
    public func count(_ a: Int, _ b: Int) -> Int {
        a == b ? 0 : self.counts[min(a, b) * self.experts + max(a, b)] ?? 0
    }

    /// Every pair with a count, most frequent first (ties: lower a, then lower b).
    public var pairs: [(a: Int, b: Int, tokens: Int)] {
        self.counts.map { (a: $0.key / self.experts, b: $0.key % self.experts, tokens: $0.value) }.sorted {
            $0.tokens != $1.tokens ? $0.tokens > $1.tokens : ($0.a, $0.b) < ($1.a, $1.b)
        }
    }

    public var isEmpty: Bool { self.counts.isEmpty && self.tokens == 0 }
}
