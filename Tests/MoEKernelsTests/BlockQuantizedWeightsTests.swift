import MoECore
import Testing

@testable import MoEKernels

/// e4m3fn by its integer form (independent of the code under test): normal `(8 + m) · 2^(e − 10)`, subnormal
/// `m · 2^−9`.
private func naiveE4M3(_ bits: UInt8) -> Float {
    let sign: Float = bits >= 0x80 ? -1 : 1
    let e = Int((bits >> 3) & 0xF), m = Int(bits & 7)
    if e == 0 { return sign * Float(m) / 512 }
    return sign * Float(8 + m) * Float(sign: .plus, exponent: e - 10, significand: 1)
}

/// Seeded uniform values in [-scale, scale).
private func uniform(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
    }
}

@Suite("Block-quantised weights (the CUDA backend's int8 and fp8)")
struct BlockQuantizedWeightsTests {
    static let finiteCodes = (0..<256).map(UInt8.init).filter { $0 & 0x7F != 0x7F }

    @Test("e4m3: every finite code decodes as the format defines it and encodes back to itself")
    func e4m3RoundTrip() {
        for code in Self.finiteCodes {
            let value = BlockQuantizedWeights.e4m3Value(code)
            #expect(value == naiveE4M3(code), "0x\(String(code, radix: 16))")
            let back = BlockQuantizedWeights.e4m3Bits(value)
            #expect(back == code, "0x\(String(code, radix: 16)) came back as 0x\(String(back, radix: 16))")
        }
        #expect(BlockQuantizedWeights.e4m3Value(0x7F).isNaN && BlockQuantizedWeights.e4m3Value(0xFF).isNaN)
    }

    @Test("e4m3 rounds to the nearest code, ties to the even one, and saturates beyond 448")
    func e4m3Rounding() {
        // Consecutive positive codes are consecutive values (subnormals run into the normals).
        for code in UInt8(0)..<0x7E {
            let low = naiveE4M3(code), high = naiveE4M3(code + 1), middle = (low + high) / 2
            let even = code & 1 == 0 ? code : code + 1
            #expect(BlockQuantizedWeights.e4m3Bits(middle) == even, "tie between 0x\(String(code, radix: 16)) and next")
            #expect(BlockQuantizedWeights.e4m3Bits(middle.nextDown) == code)
            #expect(BlockQuantizedWeights.e4m3Bits(middle.nextUp) == code + 1)
            #expect(BlockQuantizedWeights.e4m3Bits(-middle.nextUp) == 0x80 | (code + 1))
        }
        for beyond: Float in [448.5, 464, 479.9, 480, 1e6, .greatestFiniteMagnitude] {
            #expect(BlockQuantizedWeights.e4m3Bits(beyond) == 0x7E && BlockQuantizedWeights.e4m3Bits(-beyond) == 0xFE)
        }
    }

    @Test("fp8 scales each 128 × 128 block by max|w| / 448 and keeps every weight within half a step")
    func fp8Blocks() throws {
        let (rows, columns) = (128, 300)
        let gate = Matrix(rows: rows, columns: columns, values: uniform(rows * columns, seed: 1, scale: 0.05))
        var upValues = uniform(rows * columns, seed: 2, scale: 3)
        for c in 0..<128 { for r in 0..<128 { upValues[r * columns + c] = 0 } }  // an all-zero block
        let up = Matrix(rows: rows, columns: columns, values: upValues)
        let weights = try BlockQuantizedWeights(stacking: [gate, up], precision: .fp8)
        #expect(weights.blockRows == 128 && weights.blockColumns == 128 && weights.scales.count == 2 * 3)
        #expect(weights.bytes == 2 * rows * columns + 4 * 6)
        #expect(weights.bytes == BlockQuantizedWeights.bytes(.fp8, partRows: [rows, rows], columns: columns))
        let all = gate.values + up.values
        let widened = weights.dequantized().values
        for blockRow in 0..<2 {
            for blockColumn in 0..<3 {
                let scale = weights.scales[blockRow * 3 + blockColumn]
                var largest: Float = 0
                for r in (blockRow * 128)..<(blockRow * 128 + 128) {
                    for c in (blockColumn * 128)..<min(columns, blockColumn * 128 + 128) {
                        largest = max(largest, abs(all[r * columns + c]))
                        // Half a step of e4m3 at |w / s|: 2^−4 of its binade's start, 2^−10 among the subnormals.
                        let level = abs(all[r * columns + c]) / max(scale, .leastNormalMagnitude)
                        let halfStep = scale * max(Float(1.0 / 1024), level / 16) * 1.0001
                        #expect(abs(widened[r * columns + c] - all[r * columns + c]) <= halfStep)
                    }
                }
                #expect(scale == largest / 448)
            }
        }
        #expect(weights.scales[1 * 3 + 0] == 0)  // the zero block: scale 0, codes 0
    }

    @Test("fp8 takes 1 × 128 blocks where a part's rows are no multiple of 128, so parts never share a scale")
    func fp8RowBlocks() throws {
        let parts = [100, 28].enumerated().map { index, rows in
            Matrix(rows: rows, columns: 200, values: uniform(rows * 200, seed: UInt64(10 + index), scale: 1))
        }
        let weights = try BlockQuantizedWeights(stacking: parts, precision: .fp8)
        #expect(weights.blockRows == 1 && weights.blockColumns == 128 && weights.scales.count == 128 * 2)
        let stackedAlone = try parts.map { try BlockQuantizedWeights(stacking: [$0], precision: .fp8) }
        #expect(weights.values == stackedAlone.flatMap(\.values) && weights.scales == stackedAlone.flatMap(\.scales))
    }

    @Test("int8 holds the CPU's int8 levels and per-channel scales")
    func int8MatchesCPU() throws {
        let gate = Matrix(rows: 9, columns: 70, values: uniform(9 * 70, seed: 3, scale: 2))
        let up = Matrix(rows: 9, columns: 70, values: uniform(9 * 70, seed: 4, scale: 0.1))
        let weights = try BlockQuantizedWeights(stacking: [gate, up], precision: .int8)
        let cpu = try WeightMatrix(stacking: [gate, up], precision: .int8)
        guard case .int8(let levels, let scales) = cpu.storage else {
            Issue.record("expected int8 storage")
            return
        }
        #expect(weights.blockRows == 1 && weights.blockColumns == 70)
        #expect(weights.values == levels.map { UInt8(bitPattern: $0) } && weights.scales == scales)
        #expect(weights.dequantized().values == cpu.dequantized())
    }

    @Test("fp8 weights shipped in DeepSeek-V3's layout (128 × 128 blocks, scale max / 448) come back byte for byte")
    func deepSeekLayoutRoundTrip() throws {
        let (rows, columns) = (256, 256)
        var state: UInt64 = 5
        var codes = (0..<(rows * columns)).map { _ -> UInt8 in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let code = UInt8(truncatingIfNeeded: state >> 33)
            return code & 0x7F == 0x7F ? code & 0xF7 : code
        }
        for block in 0..<4 { codes[(block / 2) * 128 * columns + (block % 2) * 128] = 0x7E }  // max 448 in each block
        let scales: [Float] = [0.0021, 0.37, 1.5e-5, 12]
        let values = (0..<(rows * columns)).map { index in
            naiveE4M3(codes[index]) * scales[(index / columns / 128) * 2 + (index % columns) / 128]
        }
        let weights = try BlockQuantizedWeights(
            stacking: [Matrix(rows: rows, columns: columns, values: values)], precision: .fp8)
        #expect(weights.values == codes)
        for (got, want) in zip(weights.scales, scales) { #expect(abs(got - want) <= want * 1e-6) }
    }

    @Test("large projections are quantised in pieces on every core, as a naive restatement says")
    func piecesAgreeWithNaive() throws {
        // fp8: 2 parts × 3 blocks of 128 rows (10⁶ weights: several pieces per part); each block's scale max / 448 and
        // each byte the nearest code of w / scale.
        let (rows, columns) = (384, 1024)
        let parts = (0..<2).map {
            Matrix(rows: rows, columns: columns, values: uniform(rows * columns, seed: 30 + UInt64($0)))
        }
        let fp8 = try BlockQuantizedWeights(stacking: parts, precision: .fp8)
        let all = parts.flatMap(\.values)
        var wrongScales = 0, wrongBytes = 0
        for blockRow in 0..<6 {
            for blockColumn in 0..<8 {
                var largest: Float = 0
                for r in (blockRow * 128)..<(blockRow * 128 + 128) {
                    for c in (blockColumn * 128)..<(blockColumn * 128 + 128) {
                        largest = max(largest, abs(all[r * columns + c]))
                    }
                }
                let scale = largest / 448
                if fp8.scales[blockRow * 8 + blockColumn] != scale { wrongScales += 1 }
                for r in (blockRow * 128)..<(blockRow * 128 + 128) {
                    for c in (blockColumn * 128)..<(blockColumn * 128 + 128)
                    where fp8.values[r * columns + c] != BlockQuantizedWeights.e4m3Bits(all[r * columns + c] / scale) {
                        wrongBytes += 1
                    }
                }
            }
        }
        #expect(wrongScales == 0 && wrongBytes == 0)
        // int8: rows split anywhere (per-channel scales), against the CPU's single pass.
        let int8Parts = [700, 300].enumerated().map { index, count in
            Matrix(rows: count, columns: 1000, values: uniform(count * 1000, seed: 40 + UInt64(index), scale: 2))
        }
        let int8 = try BlockQuantizedWeights(stacking: int8Parts, precision: .int8)
        guard case .int8(let levels, let scales) = try WeightMatrix(stacking: int8Parts, precision: .int8).storage
        else {
            Issue.record("expected int8 storage")
            return
        }
        #expect(int8.values == levels.map { UInt8(bitPattern: $0) } && int8.scales == scales)
        // A NaN in a later piece is still counted.
        var poisoned = parts[1].values
        poisoned[poisoned.count - 1] = .nan
        #expect(throws: WeightPrecisionError.nonFiniteWeights(count: 1, precision: .fp8)) {
            try BlockQuantizedWeights(
                stacking: [parts[0], Matrix(rows: rows, columns: columns, values: poisoned)], precision: .fp8)
        }
    }

    @Test("refusals: f32 and bf16 are not block-quantised, NaN or infinite weights are refused")
    func refusals() {
        let matrix = Matrix(rows: 1, columns: 2, values: [1, 2])
        #expect(throws: WeightPrecisionError.self) { try BlockQuantizedWeights(stacking: [matrix], precision: .bf16) }
        for precision in [WeightPrecision.int8, .fp8] {
            #expect(throws: WeightPrecisionError.nonFiniteWeights(count: 2, precision: precision)) {
                try BlockQuantizedWeights(
                    stacking: [Matrix(rows: 2, columns: 2, values: [1, .nan, .infinity, 0])], precision: precision)
            }
        }
    }

    @Test("an expert round-tripped through fp8 is its projections quantised (gate and up stacked) and widened back")
    func roundTrippedExpert() throws {
        let (h, i) = (128, 256)
        let weights = ExpertWeights.gated(
            gate: Matrix(rows: i, columns: h, values: uniform(i * h, seed: 20, scale: 0.1)),
            up: Matrix(rows: i, columns: h, values: uniform(i * h, seed: 21, scale: 0.1)),
            down: Matrix(rows: h, columns: i, values: uniform(i * h, seed: 22, scale: 0.06)), activation: .silu)
        guard case .gated(let gate, let up, let down, _) = weights,
            case .gated(let gate8, let up8, let down8, .silu) = try weights.roundTripped(through: .fp8)
        else {
            Issue.record("expected a gated expert")
            return
        }
        let stacked = try BlockQuantizedWeights(stacking: [gate, up], precision: .fp8).dequantized().values
        #expect(gate8.values + up8.values == stacked)
        #expect(down8 == (try BlockQuantizedWeights(stacking: [down], precision: .fp8).dequantized()))
        #expect(weights.blockQuantizedBytes(.fp8) == 3 * h * i + 4 * (2 * 2 * 1 + 1 * 2))
        // e4m3 keeps 3 mantissa bits: the output moves by a few percent, no more.
        let x = Matrix(rows: 4, columns: h, values: uniform(4 * h, seed: 23))
        let error = CPUExpertKernel(weights: try weights.roundTripped(through: .fp8)).forward(x)
            .relativeError(to: CPUExpertKernel(weights: weights).forward(x))
        #expect(error > 0 && error < 6e-2)
    }
}
