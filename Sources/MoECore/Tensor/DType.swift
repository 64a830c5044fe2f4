/// Element type of tensor data: what travels on the wire and what checkpoints hold.
public enum DType: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// IEEE 754 binary32.
    case f32
    /// bfloat16: the upper 16 bits of a binary32.
    case bf16
    /// IEEE 754 binary16.
    case f16

    /// Bytes per element.
    public var byteWidth: Int {
        switch self {
        case .f32: 4
        case .bf16, .f16: 2
        }
    }

    public var description: String { self.rawValue }
}
