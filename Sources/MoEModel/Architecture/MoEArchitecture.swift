import MoECore

/// How a model family lays out and routes its MoE layers: which layers are MoE, the gate rule and tensors, the
/// experts' tensors and FFN form.
public protocol MoEArchitecture: Sendable {
    /// `model_type` values of config.json this adapter reads.
    static var modelTypes: [String] { get }
    init(config: ModelConfig) throws(ModelError)

    var modelType: String { get }
    var hiddenSize: Int { get }
    /// Every MoE layer, in model order.
    var layers: [MoELayerSpec] { get }
    /// The router tensors of a layer.
    func routerWeights(layer: MoELayerSpec, from folder: ModelFolder) throws(ModelError) -> LayerRouterWeights
    /// Loads one expert's weights (`ExpertAddress.shared` for the shared expert), widened to f32.
    func loadExpert(layer: MoELayerSpec, expert: Int, from folder: ModelFolder) throws(ModelError) -> ExpertWeights
}

/// The architectures MoEMesh serves, by `model_type`.
public enum Architectures {
    public static let all: [any MoEArchitecture.Type] = [
        MixtralArchitecture.self, QwenMoEArchitecture.self, DeepSeekArchitecture.self,
        GPTOSSArchitecture.self, SwitchTransformersArchitecture.self,
    ]

    public static var supportedModelTypes: [String] { all.flatMap { $0.modelTypes } }

    /// The adapter of `config`'s `model_type`, reading the config with its key aliases resolved.
    public static func resolve(_ config: ModelConfig) throws(ModelError) -> any MoEArchitecture {
        let modelType = try config.modelType
        guard let type = all.first(where: { $0.modelTypes.contains(modelType) }) else {
            throw .unsupportedArchitecture(modelType: modelType, supported: supportedModelTypes)
        }
        return try type.init(config: try config.resolvingAliases())
    }
}

extension ModelFolder {
    /// A gated FFN stored as three `[out, in]` matrices `{prefix}{gate}.weight`, … (SwiGLU and friends).
    func gatedExpert(
        prefix: String, names: (gate: String, up: String, down: String), hidden: Int, intermediate: Int,
        activation: Activation
    ) throws(ModelError) -> ExpertWeights {
        .gated(
            gate: try self.matrix(prefix + names.gate + ".weight", shape: [intermediate, hidden]),
            up: try self.matrix(prefix + names.up + ".weight", shape: [intermediate, hidden]),
            down: try self.matrix(prefix + names.down + ".weight", shape: [hidden, intermediate]),
            activation: activation)
    }
}

extension ModelFolder {
    /// A SwiGLU expert named `{layerPrefix}experts.{e}.{gate,up,down}_proj.weight`, or, for
    /// `ExpertAddress.shared`, `{layerPrefix}{sharedName}.{gate,up,down}_proj.weight` (Qwen-MoE/OLMoE, DeepSeek).
    func projExpert(
        layer: MoELayerSpec, expert: Int, layerPrefix: String, sharedName: String, activation: Activation
    ) throws(ModelError) -> ExpertWeights {
        let names = ("gate_proj", "up_proj", "down_proj")
        if expert == ExpertAddress.shared {
            guard let shared = layer.sharedExpert else {
                throw .unknownExpert(layer: layer.name, expert: expert, numExperts: layer.numExperts)
            }
            return try self.gatedExpert(
                prefix: layerPrefix + sharedName + ".", names: names, hidden: layer.hiddenSize,
                intermediate: shared.intermediateSize, activation: activation)
        }
        return try self.gatedExpert(
            prefix: layerPrefix + "experts.\(expert).", names: names, hidden: layer.hiddenSize,
            intermediate: layer.intermediateSize, activation: activation)
    }
}

extension ModelConfig {
    /// The activation named by `key` (default silu).
    func activation(_ key: String = "hidden_act", default fallback: String = "silu") throws(ModelError) -> Activation {
        let name = try self.string(key, default: fallback)
        guard let activation = Activation(huggingFaceName: name) else {
            throw .invalidConfig(
                path: self.path, reason: "'\(key)' '\(name)' is not supported; expected relu, gelu, gelu_new or silu")
        }
        return activation
    }

    /// Checks `top-k ≤ experts`.
    func checkTopK(_ topK: Int, experts: Int, keys: (String, String)) throws(ModelError) {
        guard topK <= experts else {
            throw .invalidConfig(path: self.path, reason: "'\(keys.0)' (\(topK)) exceeds '\(keys.1)' (\(experts))")
        }
    }
}
