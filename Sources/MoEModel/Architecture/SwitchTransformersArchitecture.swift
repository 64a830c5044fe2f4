import MoECore

/// Switch Transformers (encoder-decoder). `p = softmax(W_r x)`, expert = argmax, output `max p · expert(x)`;
/// experts `wo(relu(wi x))`. Block N of a stack is sparse iff `N % sparse_step == 1` (or `sparse_step == 1`).
/// Layers are named `encoder.N` / `decoder.N`. Served dropless by default; the router applies the original
/// per-sequence `expert_capacity` (dropped tokens give `max p · x`) when configured to.
///
/// Tensors: `{encoder,decoder}.block.{N}.layer.{1|2}.mlp.router.classifier.weight [E, H]` (1 in the encoder, 2 in
/// the decoder), `…mlp.experts.expert_{e}.wi.weight [I, H]`, `…wo.weight [H, I]`.
public struct SwitchTransformersArchitecture: MoEArchitecture {
    public static let modelTypes = ["switch_transformers"]

    public let modelType: String
    public let hiddenSize: Int
    public let layers: [MoELayerSpec]
    public let activation: Activation

    public init(config: ModelConfig) throws(ModelError) {
        let experts = try config.positiveInt("num_experts", atMost: ModelConfig.mostExperts)
        let hidden = try config.positiveInt("d_model")
        let intermediate = try config.positiveInt("d_ff")
        let capacity = try config.positiveInt("expert_capacity", default: 64)
        self.modelType = try config.modelType
        self.hiddenSize = hidden
        self.activation = try config.activation("dense_act_fn", default: "relu")
        let gate = TopKGate(numExperts: experts, topK: 1, renormalize: false)
        func sparseBlocks(count: Int, step: Int) -> [Int] {
            step <= 0 ? [] : (0..<count).filter { $0 % step == 1 || step == 1 }
        }
        let encoderBlocks = try config.count("num_layers", in: 0...ModelConfig.mostLayers)
        let decoderBlocks = try config.count(
            "num_decoder_layers", default: encoderBlocks, in: 0...ModelConfig.mostLayers)
        let encoder = sparseBlocks(
            count: encoderBlocks,
            step: try config.count("encoder_sparse_step", default: 2, in: 0...ModelConfig.mostLayers))
        let decoder = sparseBlocks(
            count: decoderBlocks,
            step: try config.count("decoder_sparse_step", default: 2, in: 0...ModelConfig.mostLayers))
        self.layers = (encoder.map { "encoder.\($0)" } + decoder.map { "decoder.\($0)" }).map {
            MoELayerSpec(
                name: $0, hiddenSize: hidden, intermediateSize: intermediate, gate: gate, expertCapacity: capacity)
        }
    }

    /// `encoder.block.3.layer.1.mlp.` for layer `encoder.3`.
    static func mlpPrefix(layer: String) -> String {
        let parts = layer.split(separator: ".")
        let stack = parts.first.map(String.init) ?? "encoder"
        return "\(stack).block.\(parts.last ?? "0").layer.\(stack == "decoder" ? 2 : 1).mlp."
    }

    public func routerWeights(layer: MoELayerSpec, from folder: ModelFolder) throws(ModelError) -> LayerRouterWeights {
        LayerRouterWeights(
            weight: try folder.matrix(
                Self.mlpPrefix(layer: layer.name) + "router.classifier.weight",
                shape: [layer.numExperts, layer.hiddenSize]))
    }

    public func loadExpert(layer: MoELayerSpec, expert: Int, from folder: ModelFolder) throws(ModelError)
        -> ExpertWeights
    {
        let prefix = Self.mlpPrefix(layer: layer.name) + "experts.expert_\(expert)."
        return .plain(
            input: try folder.matrix(prefix + "wi.weight", shape: [layer.intermediateSize, layer.hiddenSize]),
            output: try folder.matrix(prefix + "wo.weight", shape: [layer.hiddenSize, layer.intermediateSize]),
            activation: self.activation)
    }
}
