/// Why a model folder or file could not be used. Messages name the file, the tensor and what was expected.
public enum ModelError: Error, Sendable, Equatable, CustomStringConvertible {
    case io(path: String, operation: String, errno: Int32)
    case notAModelFolder(path: String, reason: String)
    case invalidSafeTensors(path: String, reason: String)
    case invalidConfig(path: String, reason: String)
    case unsupportedArchitecture(modelType: String, supported: [String])
    case missingTensor(name: String, folder: String)
    case tensorShape(name: String, expected: [Int], got: [Int])
    case unsupportedTensorDType(name: String, dtype: String)
    /// An fp8 weight without the block scales it needs.
    case missingBlockScales(name: String, scales: String, folder: String)
    case duplicateTensor(name: String, files: [String])
    case unknownLayer(layer: String, known: [String])
    case unknownExpert(layer: String, expert: Int, numExperts: Int)

    public var description: String {
        switch self {
        case .io(let path, let operation, let code):
            "\(path): \(operation) failed: \(FileSystem.describe(errno: code))"
        case .notAModelFolder(let path, let reason):
            "\(path) is not a model folder: \(reason)"
        case .invalidSafeTensors(let path, let reason):
            "\(path) is not a valid safetensors file: \(reason)"
        case .invalidConfig(let path, let reason):
            "\(path): \(reason)"
        case .unsupportedArchitecture(let modelType, let supported):
            "model_type '\(modelType)' is not supported; supported: \(supported.joined(separator: ", "))"
        case .missingTensor(let name, let folder):
            "tensor '\(name)' is missing from the checkpoint in \(folder)"
        case .tensorShape(let name, let expected, let got):
            "tensor '\(name)': expected shape \(expected), got \(got)"
        case .unsupportedTensorDType(let name, let dtype):
            "tensor '\(name)' has dtype \(dtype); expected F32, BF16 or F16 (or F8_E4M3 with block scales)"
        case .missingBlockScales(let name, let scales, let folder):
            "tensor '\(name)' is F8_E4M3 but its block scales '\(scales)' (as DeepSeek-V3 ships them, with "
                + "quantization_config.weight_block_size) are missing from the checkpoint in \(folder)"
        case .duplicateTensor(let name, let files):
            "tensor '\(name)' appears in more than one file: \(files.joined(separator: ", "))"
        case .unknownLayer(let layer, let known):
            "layer '\(layer)' is not an MoE layer of this model; MoE layers: \(known.joined(separator: ", "))"
        case .unknownExpert(let layer, let expert, let numExperts):
            "expert \(expert) does not exist in layer \(layer): expected 0..<\(numExperts)"
        }
    }
}
