/// How an expert's weight matrices are stored from load to kernel. Accumulation stays f32 (activations too on the
/// CPU; bf16 on CUDA devices).
///
/// - `f32`: 4 bytes a weight, as loaded.
/// - `bf16`: 2 bytes, round-to-nearest-even from f32.
/// - `int8`: 1 byte plus one f32 scale per output channel (row of `W [out, in]`): `W ≈ q · s`,
///   `s = max|W_row| / 127`, `q = round(W / s)` (weight-only, symmetric).
/// - `fp8`: 1 byte, e4m3fn with one f32 scale per 128 × 128 block (`s = max|W_block| / 448`; `1 × 128` blocks where
///   a projection's rows are no multiple of 128); CUDA devices only.
public enum WeightPrecision: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case f32, bf16, int8, fp8

    /// Bytes per weight, scales aside.
    public var bytesPerWeight: Int {
        switch self {
        case .f32: 4
        case .bf16: 2
        case .int8, .fp8: 1
        }
    }

    public var description: String { self.rawValue }
}
