/// How an expert's weight matrices are stored from load to kernel. Activations and accumulation stay f32.
///
/// - `f32`: 4 bytes a weight, as loaded.
/// - `bf16`: 2 bytes, round-to-nearest-even from f32.
/// - `int8`: 1 byte plus one f32 scale per output channel (row of `W [out, in]`): `W ≈ q · s`,
///   `s = max|W_row| / 127`, `q = round(W / s)` (weight-only, symmetric).
/// - `fp8`: 1 byte, e4m3 with per-channel scales; CUDA devices only.
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
