/// What identifies a checkpoint's weights, cheaply and across storage precisions: each MoE layer's gate applied to a
/// fixed probe vector, `W_r · p` with `p_j = ((j mod 17) − 8) / 8` (`j < H`; exact in any float format), `[E]` per
/// layer, accumulated in double precision. Two copies of a model agree within `tolerance` of their largest value
/// (f32, bf16 or f16 storage); another model's gates do not. Routers answer them in `DescribeModel`, experts in
/// `DescribeExperts` and their registration, and clients compare them with their own copy.
public struct GateProbes: Sendable, Equatable {
    /// Layer name → `W_r · p`, in model order.
    public let layers: [(name: String, values: [Float])]

    /// Relative tolerance: a gate stored in bf16 moves the probe by well under 1% of its largest value.
    public static let tolerance: Float = 0.02

    public init(layers: [(name: String, values: [Float])]) { self.layers = layers }

    /// `p_j = ((j mod 17) − 8) / 8`.
    public static func vector(width: Int) -> [Double] { (0..<width).map { Double($0 % 17 - 8) / 8 } }

    /// `W · p` for a gate `W: [E, H]`.
    public static func probe(_ gate: Matrix) -> [Float] {
        let p = Self.vector(width: gate.columns)
        return (0..<gate.rows).map { row in
            var sum = 0.0
            for column in 0..<gate.columns { sum += Double(gate.values[row * gate.columns + column]) * p[column] }
            return Float(sum)
        }
    }

    public static func == (lhs: GateProbes, rhs: GateProbes) -> Bool {
        lhs.layers.elementsEqual(rhs.layers) { $0.name == $1.name && $0.values == $1.values }
    }

    /// Why `other` (what `source` sent) is not the same model's, or nil when every layer agrees within `tolerance`.
    public func mismatch(_ other: GateProbes, source: String) -> String? {
        let theirs = Dictionary(other.layers.map { ($0.name, $0.values) }) { first, _ in first }
        for (name, values) in self.layers {
            guard let given = theirs[name] else { return "\(source) has no gate probe for MoE layer \(name)" }
            guard given.count == values.count else {
                return "layer \(name): \(source)'s gate has \(given.count) experts, expected \(values.count)"
            }
            let scale = max(values.map(abs).max() ?? 0, given.map(abs).max() ?? 0, 1e-3)
            let largest = zip(values, given).map { abs($0 - $1) }.max() ?? 0
            if !(largest <= Self.tolerance * scale) {
                return "layer \(name): \(source)'s gate weights differ (probe values apart by up to \(largest) of "
                    + "\(scale)): the checkpoint holds other weights"
            }
        }
        return nil
    }
}
