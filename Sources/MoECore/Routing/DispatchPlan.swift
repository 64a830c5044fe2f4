/// The routing slots of a batch grouped by expert, so that each expert gets its rows as one contiguous block.
///
/// A counting sort of the `T · k` slots by expert id: expert `e` owns rows `expertOffsets[e] ..< expertOffsets[e+1]`
/// of the dispatched order, whose tokens are `rowTokens[...]` in ascending token order. Slot `(t, j)` lands at
/// position `slotRows[t · k + j]` inside its expert's block.
public struct DispatchPlan: Sendable, Equatable {
    public let numExperts: Int
    public let tokenCount: Int
    public let topK: Int
    /// `[E + 1]` prefix sums of `tokensPerExpert`.
    public let expertOffsets: [Int]
    /// `[routed slots]` token index of each dispatched row, grouped by expert.
    public let rowTokens: [Int32]
    /// `[T · k]` row of slot `(t, j)` within its expert's block (−1 for a dropped slot).
    public let slotRows: [Int32]

    public init(_ decision: RoutingDecision) {
        let slotCount = decision.tokenCount * decision.topK
        var offsets = [Int](repeating: 0, count: decision.numExperts + 1)
        for id in decision.topkIDs where id >= 0 { offsets[Int(id) + 1] += 1 }
        for expert in 0..<decision.numExperts { offsets[expert + 1] += offsets[expert] }

        var next = Array(offsets.dropLast())
        var rowTokens = [Int32](repeating: 0, count: offsets[decision.numExperts])
        var slotRows = [Int32](repeating: -1, count: slotCount)
        for slot in 0..<slotCount where decision.topkIDs[slot] >= 0 {
            let expert = Int(decision.topkIDs[slot])
            rowTokens[next[expert]] = Int32(slot / decision.topK)
            slotRows[slot] = Int32(next[expert] - offsets[expert])
            next[expert] += 1
        }
        self.numExperts = decision.numExperts
        self.tokenCount = decision.tokenCount
        self.topK = decision.topK
        self.expertOffsets = offsets
        self.rowTokens = rowTokens
        self.slotRows = slotRows
    }

    /// Rows routed to `expert`.
    public func rowCount(ofExpert expert: Int) -> Int {
        self.expertOffsets[expert + 1] - self.expertOffsets[expert]
    }

    /// Experts with at least one row, ascending.
    public var activeExperts: [Int] {
        (0..<self.numExperts).filter { self.rowCount(ofExpert: $0) > 0 }
    }

    /// Tokens of `expert`'s block, in row order.
    public func tokens(ofExpert expert: Int) -> ArraySlice<Int32> {
        self.rowTokens[self.expertOffsets[expert]..<self.expertOffsets[expert + 1]]
    }

    /// Copies the rows of `hidden` (`[T, H]`) routed to `expert` into `destination` (`[n_e, H]`, contiguous).
    public func gather(_ hidden: Matrix, expert: Int, into destination: UnsafeMutableBufferPointer<Float>) {
        let width = hidden.columns
        precondition(destination.count == self.rowCount(ofExpert: expert) * width, "gather: wrong destination size")
        hidden.values.withUnsafeBufferPointer { source in
            for (row, token) in self.tokens(ofExpert: expert).enumerated() {
                let from = UnsafeBufferPointer(rebasing: source[(Int(token) * width)..<(Int(token) * width + width)])
                _ = UnsafeMutableBufferPointer(rebasing: destination[(row * width)..<(row * width + width)])
                    .initialize(from: from)
            }
        }
    }

    /// The rows of `hidden` (`[T, H]`) routed to `expert`, as one `[n_e, H]` block.
    public func gather(_ hidden: Matrix, expert: Int) -> Matrix {
        let count = self.rowCount(ofExpert: expert) * hidden.columns
        let values = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            self.gather(hidden, expert: expert, into: buffer)
            initialized = count
        }
        return Matrix(rows: self.rowCount(ofExpert: expert), columns: hidden.columns, values: values)
    }
}
