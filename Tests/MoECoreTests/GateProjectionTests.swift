import Testing

@testable import MoECore

@Suite("batch-invariant gate projection")
struct GateProjectionTests {
    static func random(_ rows: Int, _ columns: Int, seed: UInt64) -> Matrix {
        var generator = SplitMix64Generator(seed: seed)
        return Matrix(
            rows: rows, columns: columns,
            values: (0..<(rows * columns)).map { _ in Float(generator.nextUnit() * 2 - 1) })
    }

    /// The documented order, restated one scalar operation at a time: 16 lane sums over the row in chunks of 16
    /// (each product rounded, then added), then the fixed tree over the lanes.
    static func naive(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Float {
        let a = Array(a), b = Array(b)
        var lanes = [Float](repeating: 0, count: 16)
        var start = 0
        while start < a.count {
            for lane in 0..<16 {
                let index = start + lane
                let product: Float = index < a.count ? a[index] * b[index] : 0 * 0
                lanes[lane] = lanes[lane] + product
            }
            start += 16
        }
        let eight = (0..<8).map { lanes[$0] + lanes[$0 + 8] }
        let four = (0..<4).map { eight[$0] + eight[$0 + 4] }
        let two = (0..<2).map { four[$0] + four[$0 + 2] }
        return two[0] + two[1]
    }

    @Test("each logit is the documented sum, bitwise", arguments: [1, 15, 16, 17, 64, 1000, 2048, 4095])
    func documentedOrder(hidden: Int) {
        let x = Self.random(5, hidden, seed: UInt64(hidden)), w = Self.random(16, hidden, seed: UInt64(hidden) + 1)
        let logits = GateProjection.logits(x, w)
        for t in 0..<5 {
            for e in 0..<16 {
                #expect(
                    logits[t, e].bitPattern == Self.naive(x.row(t), w.row(e)).bitPattern, "t \(t), e \(e), H \(hidden)")
            }
        }
    }

    @Test("a token's logits are bitwise the same alone and in batches of any size", arguments: [64, 1024, 2048, 4096])
    func batchInvariant(hidden: Int) {
        let w = Self.random(16, hidden, seed: 7)
        let batch = Self.random(37, hidden, seed: 8)
        let together = GateProjection.logits(batch, w)
        for t in 0..<batch.rows {
            let alone = GateProjection.logits(Matrix(rows: 1, columns: hidden, values: Array(batch.row(t))), w)
            #expect(Array(together.row(t)).map(\.bitPattern) == alone.values.map(\.bitPattern), "token \(t)")
        }
        let prefix = GateProjection.logits(
            Matrix(rows: 5, columns: hidden, values: Array(batch.values[0..<(5 * hidden)])), w)
        #expect(prefix.values.map(\.bitPattern) == Array(together.values[0..<(5 * 16)]).map(\.bitPattern))
    }

    @Test("within 1e-5 of the exact product (f64)")
    func accurate() {
        let x = Self.random(9, 2048, seed: 3), w = Self.random(8, 2048, seed: 4)
        let logits = GateProjection.logits(x, w)
        for t in 0..<9 {
            for e in 0..<8 {
                let exact = zip(x.row(t), w.row(e)).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
                let norm = zip(x.row(t), w.row(e)).reduce(0.0) { $0 + abs(Double($1.0) * Double($1.1)) }
                #expect(abs(Double(logits[t, e]) - exact) <= 1e-5 * norm, "t \(t), e \(e)")
            }
        }
    }
}
