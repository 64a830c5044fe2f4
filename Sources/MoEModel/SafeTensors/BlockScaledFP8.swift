import MoECore

/// Checkpoints quantised to fp8 the way DeepSeek-V3 ships them: a weight `W [R, C]` stored as `F8_E4M3` (the "fn"
/// variant: no infinities, `S.1111.111` is NaN) beside `W_scale_inv [⌈R/b₀⌉, ⌈C/b₁⌉]` (f32 or bf16), one scale per
/// `b₀ × b₁` block (`quantization_config.weight_block_size`, default 128 × 128): `W[r, c] = fp8(W[r, c]) ·
/// scale_inv[r / b₀, c / b₁]`.
public enum BlockScaledFP8 {
    /// e4m3fn bits → f32, all 256 values.
    public static let e4m3Values: [Float] = (0..<256).map { Self.decodeE4M3(UInt8($0)) }

    /// One e4m3fn value: `(-1)^s · 2^(e−7) · (1 + m/8)`, subnormal `(-1)^s · 2^−6 · m/8`; `0x7F`/`0xFF` are NaN.
    public static func decodeE4M3(_ bits: UInt8) -> Float {
        let sign: Float = bits & 0x80 != 0 ? -1 : 1
        let exponent = Int((bits >> 3) & 0xF), mantissa = Float(bits & 0x7)
        if exponent == 0xF && bits & 0x7 == 0x7 { return .nan }
        if exponent == 0 { return sign * mantissa / 8 * Float.pow2(-6) }
        return sign * (1 + mantissa / 8) * Float.pow2(exponent - 7)
    }

    /// The block size of `config` (`quantization_config.weight_block_size`), [128, 128] when it names none.
    static func blockSize(_ config: ModelConfig) throws(ModelError) -> (rows: Int, columns: Int) {
        guard case .object(let quantization)? = config.values["quantization_config"],
            let size = quantization["weight_block_size"], size != .null
        else { return (128, 128) }
        guard case .array(let items) = size, items.count == 2,
            case .number(let rows) = items[0], case .number(let columns) = items[1],
            rows >= 1, columns >= 1, rows <= 65536, columns <= 65536, rows == rows.rounded(),
            columns == columns.rounded()
        else {
            throw .invalidConfig(
                path: config.path,
                reason: "'quantization_config.weight_block_size': expected two positive integers, got \(size.kind)")
        }
        return (Int(rows), Int(columns))
    }

    /// `W` widened to f32 from its fp8 bytes and block scales (`scales`: `[⌈R/b₀⌉, ⌈C/b₁⌉]`, f32).
    static func dequantize(
        _ bytes: UnsafeRawBufferPointer, rows: Int, columns: Int, scales: Matrix, block: (rows: Int, columns: Int)
    ) -> [Float] {
        let table = Self.e4m3Values
        return [Float](unsafeUninitializedCapacity: rows * columns) { buffer, initialized in
            for row in 0..<rows {
                let scaleRow = row / block.rows
                for column in 0..<columns {
                    let scale = scales.values[scaleRow * scales.columns + column / block.columns]
                    buffer[row * columns + column] = table[Int(bytes[row * columns + column])] * scale
                }
            }
            initialized = rows * columns
        }
    }
}

extension Float {
    /// 2^n for small n.
    fileprivate static func pow2(_ n: Int) -> Float { Float(sign: .plus, exponent: n, significand: 1) }
}
