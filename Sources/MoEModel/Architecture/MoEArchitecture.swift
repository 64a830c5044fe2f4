import MoECore
import MoEKernels

/// How a model family lays out and routes its MoE layers: which layers are MoE, the gate's tensor, the
/// experts' tensors and FFN form.
public protocol MoEArchitecture: Sendable {
    /// `model_type` values of config.json this adapter reads.
    static var modelTypes: [String] { get }
    init(config: ModelConfig, configPath: String) throws(ModelError)

    var modelType: String { get }
    var hiddenSize: Int { get }
    /// Every MoE layer, in model order.
    var layers: [MoELayerSpec] { get }
    /// The router (gate) weight `[E, H]` of a layer.
    func gateTensorName(layer: MoELayerSpec) -> String
    /// Loads one expert's weights, widened to f32.
    func loadExpert(layer: MoELayerSpec, expert: Int, from folder: ModelFolder) throws(ModelError) -> ExpertWeights
}

/// The architectures MoEMesh serves, by `model_type`.
public enum Architectures {
    public static let all: [any MoEArchitecture.Type] = [MixtralArchitecture.self]

    public static var supportedModelTypes: [String] { all.flatMap { $0.modelTypes } }

    public static func resolve(_ config: ModelConfig, configPath: String) throws(ModelError) -> any MoEArchitecture {
        guard let type = all.first(where: { $0.modelTypes.contains(config.modelType) }) else {
            throw .unsupportedArchitecture(modelType: config.modelType, supported: supportedModelTypes)
        }
        return try type.init(config: config, configPath: configPath)
    }
}
