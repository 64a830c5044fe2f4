import MoECore
import MoEKernels

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

    public init(config: ModelConfig, configPath: String) throws(ModelError) {
        func require(_ value: Int?, _ key: String) throws(ModelError) -> Int {
            guard let value else { throw .invalidConfig(path: configPath, reason: "required key '\(key)' is missing") }
            guard value > 0 else { throw .invalidConfig(path: configPath, reason: "'\(key)' must be positive, got \(value)") }
            return value
        }
        let intermediate = try require(config.intermediateSize, "intermediate_size")
        let experts = try require(config.numLocalExperts ?? 8, "num_local_experts")
        let topK = try require(config.numExpertsPerTok ?? 2, "num_experts_per_tok")
        guard topK <= experts else {
            throw .invalidConfig(
                path: configPath, reason: "num_experts_per_tok (\(topK)) exceeds num_local_experts (\(experts))")
        }
        guard config.hiddenSize > 0 else {
            throw .invalidConfig(path: configPath, reason: "'hidden_size' must be positive, got \(config.hiddenSize)")
        }
        let actName = config.hiddenAct ?? "silu"
        guard let activation = Activation(huggingFaceName: actName) else {
            throw .invalidConfig(path: configPath, reason: "hidden_act '\(actName)' is not supported")
        }
        self.modelType = config.modelType
        self.hiddenSize = config.hiddenSize
        self.activation = activation
        let gate = TopKGate(numExperts: experts, topK: topK, renormalize: true)
        self.layers = (0..<config.numHiddenLayers).map {
            MoELayerSpec(name: String($0), hiddenSize: config.hiddenSize, intermediateSize: intermediate, gate: gate)
        }
    }

    public func gateTensorName(layer: MoELayerSpec) -> String {
        "model.layers.\(layer.name).block_sparse_moe.gate.weight"
    }

    public static func expertTensorPrefix(layer: String, expert: Int) -> String {
        "model.layers.\(layer).block_sparse_moe.experts.\(expert)."
    }

    public func loadExpert(layer: MoELayerSpec, expert: Int, from folder: ModelFolder) throws(ModelError) -> ExpertWeights {
        let prefix = Self.expertTensorPrefix(layer: layer.name, expert: expert)
        let (h, i) = (layer.hiddenSize, layer.intermediateSize)
        return .gated(
            gate: try folder.matrix(prefix + "w1.weight", shape: [i, h]),
            up: try folder.matrix(prefix + "w3.weight", shape: [i, h]),
            down: try folder.matrix(prefix + "w2.weight", shape: [h, i]),
            activation: self.activation)
    }
}
