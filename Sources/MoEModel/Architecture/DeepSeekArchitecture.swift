import MoECore

/// DeepSeek-V2 and V3.
/// - V2: `p = softmax(l)`; `greedy` top-k, or `group_limited_greedy` (group score = max p, keep `topk_group`
///   groups); `w = p_S / Σ p_S` when `top_k > 1` and `norm_topk_prob`, else `w = p_S · routed_scaling_factor`.
/// - V3: `s = σ(l)`; `b = s + e_score_correction_bias` for selection; group score = sum of the top-2 of b in each of
///   `n_group` groups; keep `topk_group`; top-k of the masked b; `w = s_S`, `/ Σ` when `norm_topk_prob`,
///   then `· routed_scaling_factor`.
/// Shared experts (ungated, I = `moe_intermediate_size · n_shared_experts`) are added. Layer L is MoE iff
/// `L ≥ first_k_dense_replace` and `L % moe_layer_freq == 0`.
///
/// Tensors: `model.layers.{L}.mlp.gate.weight`, `…mlp.gate.e_score_correction_bias [E]` (V3),
/// `…mlp.experts.{e}.{gate,up,down}_proj.weight`, `…mlp.shared_experts.{gate,up,down}_proj.weight`.
public struct DeepSeekArchitecture: MoEArchitecture {
    public static let modelTypes = ["deepseek_v2", "deepseek_v3"]

    public let modelType: String
    public let hiddenSize: Int
    public let layers: [MoELayerSpec]
    public let activation: Activation
    /// V3's selection bias.
    public let hasCorrectionBias: Bool

    public init(config: ModelConfig) throws(ModelError) {
        let modelType = try config.modelType
        let isV3 = modelType == "deepseek_v3"
        let experts = try config.positiveInt("n_routed_experts", atMost: ModelConfig.mostExperts)
        let topK = try config.positiveInt("num_experts_per_tok", atMost: ModelConfig.mostExperts)
        try config.checkTopK(topK, experts: experts, keys: ("num_experts_per_tok", "n_routed_experts"))
        let hidden = try config.positiveInt("hidden_size")
        let intermediate = try config.positiveInt("moe_intermediate_size")
        let scalingFactor = Float(try config.double("routed_scaling_factor", default: 1))
        let normalize = try config.bool("norm_topk_prob", default: isV3) && topK > 1
        let scoringName = try config.string("scoring_func", default: isV3 ? "sigmoid" : "softmax")
        guard let scoring = TopKGate.Scoring(rawValue: scoringName), scoring != .logits else {
            throw .invalidConfig(
                path: config.path, reason: "'scoring_func' must be softmax or sigmoid, got '\(scoringName)'")
        }
        let method = try config.string("topk_method", default: isV3 ? "noaux_tc" : "greedy")
        var groupLimit: TopKGate.GroupLimit? = nil
        switch method {
        case "greedy": break
        case "group_limited_greedy", "noaux_tc":
            let groups = try config.positiveInt("n_group", atMost: ModelConfig.mostExperts),
                kept = try config.positiveInt("topk_group", atMost: ModelConfig.mostExperts)
            guard experts % groups == 0, kept <= groups else {
                throw .invalidConfig(
                    path: config.path,
                    reason:
                        "n_group (\(groups)) must divide n_routed_experts (\(experts)) and be ≥ topk_group (\(kept))")
            }
            groupLimit = .init(groups: groups, keptGroups: kept, groupScore: method == "noaux_tc" ? .sumOfTopTwo : .max)
        default:
            throw .invalidConfig(
                path: config.path,
                reason: "'topk_method' must be greedy, group_limited_greedy or noaux_tc, got '\(method)'")
        }
        // V2 scales only when it does not renormalise; V3 always scales.
        let gate = TopKGate(
            numExperts: experts, topK: topK, renormalize: normalize, scoring: scoring, groupLimit: groupLimit,
            scalingFactor: isV3 || !normalize ? scalingFactor : 1)
        let sharedCount = try config.count("n_shared_experts", default: 0, in: 0...ModelConfig.mostExperts)
        let shared =
            sharedCount > 0
            ? MoELayerSpec.SharedExpert(intermediateSize: intermediate * sharedCount, gated: false) : nil
        let firstSparse = try config.count("first_k_dense_replace", default: 0, in: 0...ModelConfig.mostLayers)
        let frequency = try config.positiveInt("moe_layer_freq", default: 1, atMost: ModelConfig.mostLayers)
        self.modelType = modelType
        self.hiddenSize = hidden
        self.activation = try config.activation()
        self.hasCorrectionBias = method == "noaux_tc"
        self.layers = (0..<(try config.positiveInt("num_hidden_layers", atMost: ModelConfig.mostLayers)))
            .filter { $0 >= firstSparse && $0 % frequency == 0 }
            .map {
                MoELayerSpec(
                    name: String($0), hiddenSize: hidden, intermediateSize: intermediate, gate: gate,
                    sharedExpert: shared)
            }
    }

    public func routerWeights(layer: MoELayerSpec, from folder: ModelFolder) throws(ModelError) -> LayerRouterWeights {
        let prefix = "model.layers.\(layer.name).mlp.gate."
        return LayerRouterWeights(
            weight: try folder.matrix(prefix + "weight", shape: [layer.numExperts, layer.hiddenSize]),
            selectionBias: self.hasCorrectionBias
                ? try folder.vector(prefix + "e_score_correction_bias", count: layer.numExperts) : nil)
    }

    public func loadExpert(layer: MoELayerSpec, expert: Int, from folder: ModelFolder) throws(ModelError)
        -> ExpertWeights
    {
        try folder.projExpert(
            layer: layer, expert: expert, layerPrefix: "model.layers.\(layer.name).mlp.", sharedName: "shared_experts",
            activation: self.activation)
    }
}
