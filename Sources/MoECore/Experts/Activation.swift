import RealModule

/// Elementwise activations of expert FFNs, by their Hugging Face `hidden_act` names.
public enum Activation: String, Sendable, Hashable, CaseIterable {
    /// `relu(z) = max(z, 0)`
    case relu
    /// `gelu(z) = z · Φ(z) = ½ z (1 + erf(z / √2))` (exact, PyTorch's default)
    case gelu
    /// `gelu_tanh(z) = ½ z (1 + tanh(√(2/π) (z + 0.044715 z³)))` (`gelu_new`, `gelu_pytorch_tanh`)
    case geluTanh = "gelu_tanh"
    /// `silu(z) = z · σ(z) = z / (1 + e^{−z})`
    case silu

    /// Reads a `hidden_act` value; `swish` is silu, `gelu_new` and `gelu_pytorch_tanh` are the tanh form.
    public init?(huggingFaceName name: String) {
        switch name {
        case "relu": self = .relu
        case "gelu": self = .gelu
        case "gelu_new", "gelu_pytorch_tanh", "gelu_tanh": self = .geluTanh
        case "silu", "swish": self = .silu
        default: return nil
        }
    }

    @inlinable
    public func callAsFunction(_ z: Float) -> Float {
        switch self {
        case .relu: return max(z, 0)
        case .gelu: return 0.5 * z * (1 + Float.erf(z * 0.70710678118654752))
        case .geluTanh:
            return 0.5 * z * (1 + Float.tanh(0.79788456080286536 * (z + 0.044715 * z * z * z)))
        case .silu: return z / (1 + Float.exp(-z))
        }
    }
}
