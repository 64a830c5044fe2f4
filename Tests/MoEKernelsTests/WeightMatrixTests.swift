import MoECore
import Testing

@testable import MoEKernels

/// Seeded uniform values in [-scale, scale).
private func uniform(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
    }
}

/// The stored weights widened naively, straight from the storage (not through the code under test).
private func naiveDequantized(_ matrix: WeightMatrix) -> [Double] {
    switch matrix.storage {
    case .f32(let values): values.map(Double.init)
    case .bf16(let values): values.map { Double(Float(bitPattern: UInt32($0) << 16)) }
    case .int8(let values, let scales):
        values.indices.map { Double(Float(values[$0]) * scales[$0 / matrix.columns]) }
    }
}

/// `Y[m, n] = X[m, k] · Wᵀ` in f64.
private func naiveProduct(_ x: [Float], rows m: Int, _ w: [Double], n: Int, k: Int) -> [Double] {
    var y = [Double](repeating: 0, count: m * n)
    for r in 0..<m {
        for j in 0..<n {
            var sum = 0.0
            for c in 0..<k { sum += Double(x[r * k + c]) * w[j * k + c] }
            y[r * n + j] = sum
        }
    }
    return y
}

/// max |got − want| / max |want|.
private func relativeError(_ got: [Float], _ want: [Double]) -> Double {
    let scale = max(1e-30, want.map(abs).max() ?? 0)
    return zip(got, want).map { abs(Double($0) - $1) }.max().map { $0 / scale } ?? 0
}

@Suite("Weight matrices in f32, bf16 and int8")
struct WeightMatrixTests {
    /// (activation rows m, weight rows n, columns k): tails of every tile (n mod 4, k mod 8 and 16, odd m), and one
    /// big enough to split over threads (n · k ≥ 65,536).
    static let shapes: [(m: Int, n: Int, k: Int)] = [
        (1, 4, 16), (1, 7, 13), (2, 9, 40), (3, 5, 33), (5, 12, 100), (16, 20, 64), (1, 260, 300), (4, 257, 264),
    ]
    static let paths = QuantizedKernelPath.allCases.filter(\.isSupported)

    @Test(
        "every kernel path this CPU has matches a naive f64 product of the dequantised weights (relative error ≤ 2e-5)",
        arguments: [WeightPrecision.f32, .bf16, .int8], shapes)
    func directKernelsMatchReference(precision: WeightPrecision, shape: (m: Int, n: Int, k: Int)) throws {
        let matrix = try WeightMatrix(
            rows: shape.n, columns: shape.k, values: uniform(shape.n * shape.k, seed: 3), precision: precision)
        let x = uniform(shape.m * shape.k, seed: 4, scale: 2)
        let want = naiveProduct(x, rows: shape.m, naiveDequantized(matrix), n: shape.n, k: shape.k)
        #expect(Self.paths.contains(.scalar))
        for path in Self.paths {
            var y = [Float](repeating: .nan, count: shape.m * shape.n)
            x.withUnsafeBufferPointer { x in
                y.withUnsafeMutableBufferPointer { y in
                    matrix.multiplyDirect(x.baseAddress!, rows: shape.m, into: y.baseAddress!, path: path)
                }
            }
            #expect(relativeError(y, want) <= 2e-5, "path \(path)")
        }
    }

    @Test(
        "the product over many rows (weights widened block by block for sgemm) matches the naive product",
        arguments: [WeightPrecision.f32, .bf16, .int8])
    func widenedProductMatchesReference(precision: WeightPrecision) throws {
        // More rows than the direct kernels take; 300 weight rows in blocks of 128: two whole blocks and a tail.
        let (m, n, k) = (WeightMatrix.directRowLimit + 7, 300, 72)
        let matrix = try WeightMatrix(rows: n, columns: k, values: uniform(n * k, seed: 5), precision: precision)
        let x = uniform(m * k, seed: 6)
        let want = naiveProduct(x, rows: m, naiveDequantized(matrix), n: n, k: k)
        for blocks in [nil, 128 * k * 4] {
            var y = [Float](repeating: .nan, count: m * n)
            x.withUnsafeBufferPointer { x in
                y.withUnsafeMutableBufferPointer { y in
                    if let blocks {
                        matrix.multiplyWidened(x.baseAddress!, rows: m, into: y.baseAddress!, blockBytes: blocks)
                    } else {
                        matrix.multiply(x.baseAddress!, rows: m, into: y.baseAddress!)
                    }
                }
            }
            #expect(relativeError(y, want) <= 2e-5)
        }
        let dequantizedMatches = matrix.dequantized().map(Double.init) == naiveDequantized(matrix)
        #expect(dequantizedMatches)
    }

    @Test(
        "every row count through multiply (1, 2–16, up to the direct limit, beyond it) matches the naive product",
        arguments: [WeightPrecision.f32, .bf16, .int8], [1, 2, 3, 7, 16, 17, 64, 128, 129, 140])
    func productMatchesReferenceForEveryRowCount(precision: WeightPrecision, m: Int) throws {
        // Odd widths (tails of the 4-row tiles and of every vector width); relative error ≤ 2e-5.
        let (n, k) = (67, 45)
        let matrix = try WeightMatrix(rows: n, columns: k, values: uniform(n * k, seed: 7), precision: precision)
        let x = uniform(m * k, seed: 8, scale: 2)
        let want = naiveProduct(x, rows: m, naiveDequantized(matrix), n: n, k: k)
        var y = [Float](repeating: .nan, count: m * n)
        x.withUnsafeBufferPointer { x in
            y.withUnsafeMutableBufferPointer { y in matrix.multiply(x.baseAddress!, rows: m, into: y.baseAddress!) }
        }
        #expect(relativeError(y, want) <= 2e-5)
    }

    @Test(
        "the direct kernels agree with the sgemm path on the same weights for 1, 2–16 and > 16 rows (relative ≤ 1e-5)",
        arguments: [WeightPrecision.f32, .bf16, .int8], [1, 5, 16, 40])
    func directKernelsAgreeWithSgemm(precision: WeightPrecision, m: Int) throws {
        let (n, k) = (133, 301)  // tails of the 4-row tiles and of every vector width
        let matrix = try WeightMatrix(rows: n, columns: k, values: uniform(n * k, seed: 11), precision: precision)
        let x = uniform(m * k, seed: 12)
        func product(_ kernel: WeightMatrix.ProductKernel) -> [Float] {
            var y = [Float](repeating: .nan, count: m * n)
            x.withUnsafeBufferPointer { x in
                y.withUnsafeMutableBufferPointer { y in
                    matrix.multiply(x.baseAddress!, rows: m, into: y.baseAddress!, kernel: kernel)
                }
            }
            return y
        }
        let (direct, sgemm) = (product(.direct), product(.sgemm))
        #expect(relativeError(direct, sgemm.map(Double.init)) <= 1e-5)
    }

    @Test(
        "up to the direct limit a row's answer is the same bit for bit alone or among others (decode batches)",
        arguments: [WeightPrecision.f32, .bf16, .int8])
    func directProductIsBatchInvariant(precision: WeightPrecision) throws {
        // Big enough to split over threads (n · k ≥ 65,536), with tails of the 4-row tiles and of 16 lanes.
        let (n, k) = (259, 301)
        let matrix = try WeightMatrix(rows: n, columns: k, values: uniform(n * k, seed: 9), precision: precision)
        let m = WeightMatrix.directRowLimit
        let x = uniform(m * k, seed: 10)
        func product(rows: Range<Int>) -> [Float] {
            var y = [Float](repeating: .nan, count: rows.count * n)
            x.withUnsafeBufferPointer { x in
                y.withUnsafeMutableBufferPointer { y in
                    matrix.multiply(x.baseAddress! + rows.lowerBound * k, rows: rows.count, into: y.baseAddress!)
                }
            }
            return y
        }
        let all = product(rows: 0..<m)
        for rows in [0..<1, 5..<6, 2..<4, 3..<10, 0..<16, (m - 1)..<m] {
            #expect(product(rows: rows) == Array(all[(rows.lowerBound * n)..<(rows.upperBound * n)]), "rows \(rows)")
        }
    }

    @Test("bf16 storage is round-to-nearest-even of each weight, bit for bit")
    func bf16Rounding() throws {
        let values = uniform(64, seed: 7) + [0, -0, 1e-40, .infinity, -.infinity, 3.0e38, 1.00390625, 1.01171875]
        let matrix = try WeightMatrix(rows: 1, columns: values.count, values: values, precision: .bf16)
        guard case .bf16(let stored) = matrix.storage else { Issue.record("expected bf16 storage"); return }
        #expect(stored == values.map(HalfPrecision.bfloat16(from:)))
        #expect(matrix.bytes == values.count * 2)
    }

    @Test("int8 keeps one scale per row, max|row| / 127, and every weight within half a step")
    func int8Quantisation() throws {
        let (n, k) = (6, 50)
        var values = uniform(n * k, seed: 8, scale: 3)
        for c in 0..<k { values[2 * k + c] = 0 }  // an all-zero row
        let matrix = try WeightMatrix(rows: n, columns: k, values: values, precision: .int8)
        guard case .int8(let q, let scales) = matrix.storage else { Issue.record("expected int8 storage"); return }
        #expect(matrix.bytes == n * k + n * 4)
        for row in 0..<n {
            let slice = values[(row * k)..<((row + 1) * k)]
            let largest = slice.map(abs).max()!
            #expect(scales[row] == largest / 127)
            for c in 0..<k {
                #expect(abs(Int(q[row * k + c])) <= 127)
                #expect(abs(Float(q[row * k + c]) * scales[row] - values[row * k + c]) <= scales[row] / 2 * 1.0001)
            }
        }
        #expect(q[(2 * k)..<(3 * k)].allSatisfy { $0 == 0 } && scales[2] == 0)
    }

    @Test("int8 refuses NaN or infinite weights, and the CPU refuses fp8, each saying what to do instead")
    func refusals() {
        #expect(throws: WeightPrecisionError.nonFiniteWeights(count: 2, precision: .int8)) {
            try WeightMatrix(rows: 2, columns: 2, values: [1, .nan, .infinity, 0], precision: .int8)
        }
        #expect(throws: WeightPrecisionError.unsupportedOnCPU(.fp8)) {
            try WeightMatrix(rows: 1, columns: 1, values: [1], precision: .fp8)
        }
        #expect(WeightPrecisionError.unsupportedOnCPU(.fp8).description.contains("choose f32, bf16 or int8"))
        #expect(throws: WeightPrecisionError.unsupportedOnCPU(.fp8)) { try CPUExpertBackend().check(.fp8) }
    }
}
