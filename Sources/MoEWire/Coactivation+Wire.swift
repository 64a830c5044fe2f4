import MoECore
import MoEProto

extension Moemesh_V1_LayerCoactivation {
    public init(_ counts: Coactivation, layer: String) {
        self.init()
        self.layer = layer
        self.numExperts = Int32(counts.experts)
        self.tokens = Int64(counts.tokens)
        self.pairs = counts.pairs.map { pair in
            .with {
                $0.a = Int32(pair.a)
                $0.b = Int32(pair.b)
                $0.tokens = Int64(pair.tokens)
            }
        }
    }
}

extension Coactivation {
    /// Most experts a layer may have (as `ModelConfig.mostExperts`).
    public static let mostExperts = 65536

    /// Reads a reported count, checking every field: a width of 1 to 65,536 experts, pairs of two different experts
    /// in range, counts of 0 or more.
    public init(_ message: Moemesh_V1_LayerCoactivation) throws(CoactivationError) {
        let experts = Int(message.numExperts)
        guard (1...Self.mostExperts).contains(experts) else {
            throw .init(layer: message.layer, reason: "num_experts: expected 1 to \(Self.mostExperts), got \(experts)")
        }
        guard message.tokens >= 0 else {
            throw .init(layer: message.layer, reason: "tokens: expected 0 or more, got \(message.tokens)")
        }
        self.init(experts: experts)
        for pair in message.pairs {
            guard pair.a != pair.b, (0..<experts).contains(Int(pair.a)), (0..<experts).contains(Int(pair.b)),
                pair.tokens >= 0
            else {
                throw .init(
                    layer: message.layer,
                    reason: "pair (\(pair.a), \(pair.b)) × \(pair.tokens): expected two different experts in "
                        + "0..<\(experts) and a count of 0 or more")
            }
            self.add(Int(pair.a), Int(pair.b), count: Int(pair.tokens))
        }
        self.addTokens(Int(message.tokens))
    }
}

/// A co-activation count that does not fit the model, or is malformed.
public struct CoactivationError: Error, Sendable, Equatable, CustomStringConvertible {
    public let layer: String
    public let reason: String

    public init(layer: String, reason: String) {
        self.layer = layer
        self.reason = reason
    }

    public var description: String { "coactivation of layer '\(self.layer)': \(self.reason)" }
}
