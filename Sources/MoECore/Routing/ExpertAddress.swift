/// An expert of a model: `(layer, expert)`.
public struct ExpertAddress: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let layer: String
    public let expert: Int

    public init(layer: String, expert: Int) {
        self.layer = layer
        self.expert = expert
    }

    public var description: String { "layer \(self.layer) expert \(self.expert)" }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.layer.count, lhs.layer, lhs.expert) < (rhs.layer.count, rhs.layer, rhs.expert)
    }
}
