import MoECore

/// Qwen2-MoE, Qwen3-MoE and OLMoE, which share their tensor names. `p = softmax(W_r x)`, top-k, `w = p_S`
/// (renormalised iff `norm_topk_prob`, default false); experts `down(silu(gate x) ⊙ up x)` of width
/// `moe_intermediate_size` (OLMoE: `intermediate_size`). Qwen2-MoE adds `σ(shared_expert_gate · x) · shared_expert(x)`.
/// Layer L is MoE iff `L ∉ mlp_only_layers` and `(L + 1) % decoder_sparse_step == 0` (OLMoE has neither key:
/// every layer).
///
/// Tensors: `model.layers.{L}.mlp.gate.weight [E, H]`, `…mlp.experts.{e}.{gate,up,down}_proj.weight`;
/// Qwen2-MoE `…mlp.shared_expert.{gate,up,down}_proj.weight`, `…mlp.shared_expert_gate.weight [1, H]`.
public struct QwenMoEArchitecture: MoEArchitecture {
    public static let modelTypes = ["qwen2_moe", "qwen3_moe", "olmoe"]

    public let modelType: String
    public let hiddenSize: Int
    public let layers: [MoELayerSpec]
    public let activation: Activation

    public init(config: ModelConfig) throws(ModelError) {
        self.modelType = try config.modelType
        let experts = try config.positiveInt("num_experts", atMost: ModelConfig.mostExperts)
        let topK = try config.positiveInt("num_experts_per_tok", atMost: ModelConfig.mostExperts)
        try config.checkTopK(topK, experts: experts, keys: ("num_experts_per_tok", "num_experts"))
        let hidden = try config.positiveInt("hidden_size")
        let intermediate = try config.positiveInt(
            self.modelType == "olmoe" ? "intermediate_size" : "moe_intermediate_size")
        let sparseStep = try config.positiveInt("decoder_sparse_step", default: 1, atMost: ModelConfig.mostLayers)
        let denseLayers = Set(try config.intArray("mlp_only_layers"))
        var shared: MoELayerSpec.SharedExpert? = nil
        if self.modelType == "qwen2_moe" {
            let sharedIntermediate = try config.count(
                "shared_expert_intermediate_size", default: 0, in: 0...ModelConfig.largestSize)
            if sharedIntermediate > 0 { shared = .init(intermediateSize: sharedIntermediate, gated: true) }
        }
        self.hiddenSize = hidden
        self.activation = try config.activation()
        let gate = TopKGate(
            numExperts: experts, topK: topK, renormalize: try config.bool("norm_topk_prob", default: false))
        self.layers = (0..<(try config.positiveInt("num_hidden_layers", atMost: ModelConfig.mostLayers)))
            .filter { !denseLayers.contains($0) && ($0 + 1) % sparseStep == 0 }
            .map {
                MoELayerSpec(
                    name: String($0), hiddenSize: hidden, intermediateSize: intermediate, gate: gate,
                    sharedExpert: shared)
            }
    }

    public func routerWeights(layer: MoELayerSpec, from folder: ModelFolder) throws(ModelError) -> LayerRouterWeights {
        let prefix = "model.layers.\(layer.name).mlp."
        return LayerRouterWeights(
            weight: try folder.matrix(prefix + "gate.weight", shape: [layer.numExperts, layer.hiddenSize]),
            sharedExpertGate: layer.sharedExpert == nil
                ? nil : try folder.matrix(prefix + "shared_expert_gate.weight", shape: [1, layer.hiddenSize]))
    }

    public func loadExpert(layer: MoELayerSpec, expert: Int, from folder: ModelFolder) throws(ModelError)
        -> ExpertWeights
    {
        try folder.projExpert(
            layer: layer, expert: expert, layerPrefix: "model.layers.\(layer.name).mlp.", sharedName: "shared_expert",
            activation: self.activation)
    }
}
