/// Which k experts each of T tokens goes to, and with what weight.
///
/// `topkIDs` and `topkWeights` are `[T, k]`, row-major: slot `(t, j)` is at `t · k + j`. Within a token the
/// slots are ordered by descending score, ties broken by the lower expert index.
public struct RoutingDecision: Sendable, Equatable {
    public let tokenCount: Int
    public let topK: Int
    public let numExperts: Int
    /// `[T, k]` expert indices in `0..<numExperts`.
    public var topkIDs: [Int32]
    /// `[T, k]` combine weights aligned with `topkIDs`.
    public var topkWeights: [Float]

    public init(tokenCount: Int, topK: Int, numExperts: Int, topkIDs: [Int32], topkWeights: [Float]) {
        precondition(topkIDs.count == tokenCount * topK && topkWeights.count == tokenCount * topK)
        self.tokenCount = tokenCount
        self.topK = topK
        self.numExperts = numExperts
        self.topkIDs = topkIDs
        self.topkWeights = topkWeights
    }

    /// Tokens routed to each expert: `tokensPerExpert[e] = |{(t, j) : topkIDs[t·k + j] = e}|`, `[E]`.
    public var tokensPerExpert: [Int] {
        var counts = [Int](repeating: 0, count: self.numExperts)
        for id in self.topkIDs { counts[Int(id)] += 1 }
        return counts
    }
}
