/// An expert of a model: `(layer, expert)`. Expert index `ExpertAddress.shared` (−1) is the layer's shared
/// expert (Qwen2-MoE, DeepSeek), served like any other.
public struct ExpertAddress: Sendable, Hashable, Comparable, CustomStringConvertible {
    public static let shared = -1

    public let layer: String
    public let expert: Int

    public init(layer: String, expert: Int) {
        self.layer = layer
        self.expert = expert
    }

    public var isShared: Bool { self.expert == Self.shared }

    public var description: String {
        self.isShared ? "layer \(self.layer) shared expert" : "layer \(self.layer) expert \(self.expert)"
    }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.layer.count, lhs.layer, lhs.expert) < (rhs.layer.count, rhs.layer, rhs.expert)
    }
}
