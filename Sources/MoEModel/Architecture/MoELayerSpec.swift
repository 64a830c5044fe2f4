import MoECore

/// One MoE layer of a model: its name, experts, gate and shared expert.
public struct MoELayerSpec: Sendable, Equatable {
    /// A layer's shared expert (Qwen2-MoE, DeepSeek): a gated FFN every token goes through.
    public struct SharedExpert: Sendable, Equatable {
        public let intermediateSize: Int
        /// Qwen2-MoE scales its output by `σ(w_sg · x)`; DeepSeek adds it as is.
        public let gated: Bool

        public init(intermediateSize: Int, gated: Bool) {
            self.intermediateSize = intermediateSize
            self.gated = gated
        }
    }

    /// The layer's name: its index in the tensor names ("0", "1", ...), or `encoder.N` / `decoder.N` (Switch).
    public let name: String
    public let hiddenSize: Int
    public let intermediateSize: Int
    /// The gate's rule; biases read from the checkpoint are added by `MoECheckpoint.gate(layer:)`.
    public let gate: TopKGate
    public let sharedExpert: SharedExpert?
    /// Switch's `expert_capacity`: per-sequence capacity, applied when the router is configured to.
    public let expertCapacity: Int?

    public var numExperts: Int { self.gate.numExperts }
    public var topK: Int { self.gate.topK }

    public init(
        name: String, hiddenSize: Int, intermediateSize: Int, gate: TopKGate, sharedExpert: SharedExpert? = nil,
        expertCapacity: Int? = nil
    ) {
        self.name = name
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.gate = gate
        self.sharedExpert = sharedExpert
        self.expertCapacity = expertCapacity
    }

    /// Every expert of the layer, the shared one (`ExpertAddress.shared`) last.
    public var expertAddresses: [ExpertAddress] {
        (0..<self.numExperts).map { ExpertAddress(layer: self.name, expert: $0) }
            + (self.sharedExpert == nil ? [] : [ExpertAddress(layer: self.name, expert: ExpertAddress.shared)])
    }
}

/// The router's tensors of a layer.
public struct LayerRouterWeights: Sendable, Equatable {
    /// `W_r: [E, H]`.
    public let weight: Matrix
    /// `[E]` added to the logits (GPT-OSS).
    public let logitBias: [Float]?
    /// `[E]` added for selection only (DeepSeek-V3).
    public let selectionBias: [Float]?
    /// `w_sg: [1, H]`, the shared expert's gate (Qwen2-MoE).
    public let sharedExpertGate: Matrix?

    public init(
        weight: Matrix, logitBias: [Float]? = nil, selectionBias: [Float]? = nil, sharedExpertGate: Matrix? = nil
    ) {
        self.weight = weight
        self.logitBias = logitBias
        self.selectionBias = selectionBias
        self.sharedExpertGate = sharedExpertGate
    }
}
