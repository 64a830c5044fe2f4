#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The fields of a Hugging Face `config.json` that MoEMesh reads. Architectures pick the ones they use.
public struct ModelConfig: Sendable, Equatable, Codable {
    public var modelType: String
    public var hiddenSize: Int
    public var intermediateSize: Int?
    public var numHiddenLayers: Int
    /// Mixtral: experts per layer.
    public var numLocalExperts: Int?
    /// Experts chosen per token.
    public var numExpertsPerTok: Int?
    public var hiddenAct: String?
    public var torchDtype: String?

    public init(
        modelType: String, hiddenSize: Int, intermediateSize: Int?, numHiddenLayers: Int,
        numLocalExperts: Int?, numExpertsPerTok: Int?, hiddenAct: String?, torchDtype: String?
    ) {
        self.modelType = modelType
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numLocalExperts = numLocalExperts
        self.numExpertsPerTok = numExpertsPerTok
        self.hiddenAct = hiddenAct
        self.torchDtype = torchDtype
    }

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type"
        case hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers"
        case numLocalExperts = "num_local_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case hiddenAct = "hidden_act"
        case torchDtype = "torch_dtype"
    }

    /// Reads and decodes `config.json`.
    public static func load(path: String) throws(ModelError) -> ModelConfig {
        let bytes = try FileSystem.readFile(path)
        do {
            return try JSONDecoder().decode(ModelConfig.self, from: Data(bytes))
        } catch let DecodingError.keyNotFound(key, _) {
            throw .invalidConfig(path: path, reason: "required key '\(key.stringValue)' is missing")
        } catch let DecodingError.typeMismatch(_, context) {
            throw .invalidConfig(
                path: path, reason: "key '\(context.codingPath.map(\.stringValue).joined(separator: "."))' has the wrong type")
        } catch {
            throw .invalidConfig(path: path, reason: "not valid JSON")
        }
    }

    /// `config.json` text with the keys above (those that are set), pretty-printed, keys sorted.
    public func json() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return Array((try? encoder.encode(self)) ?? Data())
    }
}
