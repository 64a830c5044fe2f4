/// Which experts each of T tokens goes to, and with what weight.
///
/// `topkIDs` and `topkWeights` are `[T, k]`, row-major: slot `(t, j)` is at `t · k + j`. Within a token the
/// slots are ordered by descending score, ties broken by the lower expert index. A slot whose id is
/// `RoutingDecision.dropped` (−1) goes to no expert and contributes nothing (capacity overflow, expert choice).
/// `residualWeights`, when set, adds `r_t · x_t` to token t's output (Switch's dropped tokens keep `max p · x`).
public struct RoutingDecision: Sendable, Equatable {
    /// The id of a slot that goes to no expert.
    public static let dropped: Int32 = -1

    public let tokenCount: Int
    public let topK: Int
    public let numExperts: Int
    /// `[T, k]` expert indices in `0..<numExperts`, or `dropped`.
    public var topkIDs: [Int32]
    /// `[T, k]` combine weights aligned with `topkIDs` (0 for dropped slots).
    public var topkWeights: [Float]
    /// `[T]` weight of each token's own hidden state in its output, or nil for none.
    public var residualWeights: [Float]?

    public init(
        tokenCount: Int, topK: Int, numExperts: Int, topkIDs: [Int32], topkWeights: [Float],
        residualWeights: [Float]? = nil
    ) {
        precondition(topkIDs.count == tokenCount * topK && topkWeights.count == tokenCount * topK)
        precondition(residualWeights.map { $0.count == tokenCount } ?? true)
        self.tokenCount = tokenCount
        self.topK = topK
        self.numExperts = numExperts
        self.topkIDs = topkIDs
        self.topkWeights = topkWeights
        self.residualWeights = residualWeights
    }

    /// Rows routed to each expert: `tokensPerExpert[e] = |{(t, j) : topkIDs[t·k + j] = e}|`, `[E]`.
    public var tokensPerExpert: [Int] {
        var counts = [Int](repeating: 0, count: self.numExperts)
        for id in self.topkIDs where id >= 0 { counts[Int(id)] += 1 }
        return counts
    }

    /// Slots that go to no expert.
    public var droppedSlots: Int { self.topkIDs.reduce(0) { $0 + ($1 < 0 ? 1 : 0) } }
}
