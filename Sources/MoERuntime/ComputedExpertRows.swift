import MoECore

/// The expert outputs one call has computed so far: per expert, blocks of rows and the token each row belongs to.
/// An expert's output row depends on its token's hidden state only, so when a reroute changes the routing, rows
/// already computed are reused and only the (expert, token) pairs the new routing adds are computed.
struct ComputedExpertRows {
    private var blocks: [Int: [(tokens: ArraySlice<Int32>, output: Matrix)]] = [:]
    /// The shared expert's output for every token, once computed.
    var shared: Matrix?

    mutating func add(expert: Int, tokens: ArraySlice<Int32>, output: Matrix) {
        self.blocks[expert, default: []].append((tokens, output))
    }

    /// Whether any row of `expert` has been computed.
    func hasRows(of expert: Int) -> Bool { self.blocks[expert] != nil }

    /// The tokens among `tokens` whose row of `expert` has not been computed, in their order.
    func missing(expert: Int, of tokens: ArraySlice<Int32>) -> [Int32] {
        guard let blocks = self.blocks[expert] else { return Array(tokens) }
        let done = Set(blocks.flatMap(\.tokens))
        return tokens.filter { !done.contains($0) }
    }

    /// `expert`'s output rows for `tokens`, in their order, `[tokens.count, width]`; every row must be computed.
    func output(expert: Int, for tokens: ArraySlice<Int32>, width: Int) -> Matrix {
        let blocks = self.blocks[expert] ?? []
        // The usual case: computed in one call, for exactly these tokens.
        if blocks.count == 1, blocks[0].tokens.elementsEqual(tokens) { return blocks[0].output }
        var source: [Int32: (block: Int, row: Int)] = [:]
        for (index, block) in blocks.enumerated() {
            for (row, token) in block.tokens.enumerated() { source[token] = (index, row) }
        }
        var values = [Float](repeating: 0, count: tokens.count * width)
        for (row, token) in tokens.enumerated() {
            guard let (block, sourceRow) = source[token] else {
                preconditionFailure("expert \(expert): no computed row for token \(token)")
            }
            let from = sourceRow * width
            values.replaceSubrange(
                (row * width)..<((row + 1) * width), with: blocks[block].output.values[from..<(from + width)])
        }
        return Matrix(rows: tokens.count, columns: width, values: values)
    }
}
