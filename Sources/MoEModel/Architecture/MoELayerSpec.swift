import MoECore

/// One MoE layer of a model: its name, experts and gate.
public struct MoELayerSpec: Sendable, Equatable {
    /// The layer's name as in the tensor names ("0", "1", ...).
    public let name: String
    public let hiddenSize: Int
    public let intermediateSize: Int
    public let gate: TopKGate

    public var numExperts: Int { self.gate.numExperts }
    public var topK: Int { self.gate.topK }

    public init(name: String, hiddenSize: Int, intermediateSize: Int, gate: TopKGate) {
        self.name = name
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.gate = gate
    }
}
