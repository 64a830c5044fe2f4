import MoECore

/// GPT-OSS: `l = W_r x + b_r`; top-k of l; `w = softmax(l_S)`. Experts are stored fused, for all experts of a layer,
/// in the `x · W` layout: `gate_up_proj [E, H, 2I]` (gate = even columns, up = odd), `gate_up_proj_bias [E, 2I]`,
/// `down_proj [E, I, H]`, `down_proj_bias [E, H]`; the FFN is the clamped SwiGLU with `lim = swiglu_limit` (7.0)
/// and α = 1.702. An expert is read as its own slice of those tensors.
public struct GPTOSSArchitecture: MoEArchitecture {
    public static let modelTypes = ["gpt_oss"]
    public static let alpha: Float = 1.702

    public let modelType: String
    public let hiddenSize: Int
    public let layers: [MoELayerSpec]
    public let limit: Float

    public init(config: ModelConfig) throws(ModelError) {
        let experts = try config.positiveInt("num_local_experts", atMost: ModelConfig.mostExperts)
        let topK = try config.positiveInt("num_experts_per_tok", atMost: ModelConfig.mostExperts)
        try config.checkTopK(topK, experts: experts, keys: ("num_experts_per_tok", "num_local_experts"))
        let hidden = try config.positiveInt("hidden_size")
        let intermediate = try config.positiveInt("intermediate_size")
        self.modelType = try config.modelType
        self.hiddenSize = hidden
        self.limit = Float(try config.double("swiglu_limit", default: 7))
        let gate = TopKGate(
            numExperts: experts, topK: topK, renormalize: false, scoring: .logits, weighting: .softmaxOfSelected)
        self.layers = (0..<(try config.positiveInt("num_hidden_layers", atMost: ModelConfig.mostLayers))).map {
            MoELayerSpec(name: String($0), hiddenSize: hidden, intermediateSize: intermediate, gate: gate)
        }
    }

    public func routerWeights(layer: MoELayerSpec, from folder: ModelFolder) throws(ModelError) -> LayerRouterWeights {
        let prefix = "model.layers.\(layer.name).mlp.router."
        return LayerRouterWeights(
            weight: try folder.matrix(prefix + "weight", shape: [layer.numExperts, layer.hiddenSize]),
            logitBias: try folder.vector(prefix + "bias", count: layer.numExperts))
    }

    public func loadExpert(layer: MoELayerSpec, expert: Int, from folder: ModelFolder) throws(ModelError)
        -> ExpertWeights
    {
        guard expert >= 0 else { throw .unknownExpert(layer: layer.name, expert: expert, numExperts: layer.numExperts) }
        let prefix = "model.layers.\(layer.name).mlp.experts."
        let (e, h, i) = (layer.numExperts, layer.hiddenSize, layer.intermediateSize)
        let gateUp = try folder.slice(prefix + "gate_up_proj", index: expert, count: e, shape: [h, 2 * i])
        let gateUpBias = try folder.slice(prefix + "gate_up_proj_bias", index: expert, count: e, shape: [2 * i]).values
        let down = try folder.slice(prefix + "down_proj", index: expert, count: e, shape: [i, h])
        let downBias = try folder.slice(prefix + "down_proj_bias", index: expert, count: e, shape: [h]).values
        // x · W → W · x: gate[r][c] = gate_up[c][2r], up[r][c] = gate_up[c][2r + 1], down[r][c] = down_proj[c][r].
        var gate = Matrix(zeros: i, h), up = Matrix(zeros: i, h), downT = Matrix(zeros: h, i)
        for column in 0..<h {
            for row in 0..<i {
                gate[row, column] = gateUp[column, 2 * row]
                up[row, column] = gateUp[column, 2 * row + 1]
                downT[column, row] = down[row, column]
            }
        }
        return .clampedSwiGLU(
            gate: gate, up: up, down: downT,
            gateBias: stride(from: 0, to: 2 * i, by: 2).map { gateUpBias[$0] },
            upBias: stride(from: 1, to: 2 * i, by: 2).map { gateUpBias[$0] },
            downBias: downBias, limit: self.limit, alpha: Self.alpha)
    }
}
