import MoECore

/// Mixtral: every decoder layer is MoE. `p = softmax(W_r x)`, top-k, `w = p_S / Σ p_S`;
/// experts `w2(silu(w1 x) ⊙ w3 x)`.
///
/// Tensors: `model.layers.{L}.block_sparse_moe.gate.weight [E, H]`,
/// `…experts.{e}.w1.weight [I, H]`, `w3 [I, H]`, `w2 [H, I]`.
public struct MixtralArchitecture: MoEArchitecture {
    public static let modelTypes = ["mixtral"]

    public let modelType: String
    public let hiddenSize: Int
    public let layers: [MoELayerSpec]
    public let activation: Activation

    public init(config: ModelConfig) throws(ModelError) {
        let experts = try config.positiveInt("num_local_experts", default: 8, atMost: ModelConfig.mostExperts)
        let topK = try config.positiveInt("num_experts_per_tok", default: 2, atMost: ModelConfig.mostExperts)
        try config.checkTopK(topK, experts: experts, keys: ("num_experts_per_tok", "num_local_experts"))
        let hidden = try config.positiveInt("hidden_size")
        let intermediate = try config.positiveInt("intermediate_size")
        self.modelType = try config.modelType
        self.hiddenSize = hidden
        self.activation = try config.activation()
        let gate = TopKGate(numExperts: experts, topK: topK, renormalize: true)
        self.layers = (0..<(try config.positiveInt("num_hidden_layers", atMost: ModelConfig.mostLayers))).map {
            MoELayerSpec(name: String($0), hiddenSize: hidden, intermediateSize: intermediate, gate: gate)
        }
    }

    public func routerWeights(layer: MoELayerSpec, from folder: ModelFolder) throws(ModelError) -> LayerRouterWeights {
        LayerRouterWeights(
            weight: try folder.matrix(
                "model.layers.\(layer.name).block_sparse_moe.gate.weight", shape: [layer.numExperts, layer.hiddenSize]))
    }

    public static func expertTensorPrefix(layer: String, expert: Int) -> String {
        "model.layers.\(layer).block_sparse_moe.experts.\(expert)."
    }

    public func loadExpert(layer: MoELayerSpec, expert: Int, from folder: ModelFolder) throws(ModelError)
        -> ExpertWeights
    {
        try folder.gatedExpert(
            prefix: Self.expertTensorPrefix(layer: layer.name, expert: expert), names: ("w1", "w3", "w2"),
            hidden: layer.hiddenSize, intermediate: layer.intermediateSize, activation: self.activation)
    }
}
