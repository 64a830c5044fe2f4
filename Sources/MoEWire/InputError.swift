import MoECore

/// Why a block of token rows sent to a service was refused. Messages say what was expected and what came.
public enum InputError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The tensor field was absent or had no dtype.
    case missingTensor(field: String)
    case unsupportedDType(field: String, got: String)
    case rank(field: String, expected: String, shape: [Int])
    case hiddenSize(field: String, expected: Int, got: Int)
    case emptyBatch(field: String, shape: [Int])
    case nonFinite(field: String, value: Float, row: Int, column: Int)
    case tensor(field: String, TensorError)

    public var description: String {
        switch self {
        case .missingTensor(let field):
            "\(field): expected a tensor with dtype f32, bf16 or f16, got none"
        case .unsupportedDType(let field, let got):
            "\(field): expected dtype f32, bf16 or f16, got \(got)"
        case .rank(let field, let expected, let shape):
            "\(field): expected shape \(expected), got \(shape)"
        case .hiddenSize(let field, let expected, let got):
            "\(field): hidden size: expected \(expected), got \(got)"
        case .emptyBatch(let field, let shape):
            "\(field): empty batch: expected at least one token, got shape \(shape)"
        case .nonFinite(let field, let value, let row, let column):
            "\(field): expected finite values, got \(value) at token \(row), column \(column)"
        case .tensor(let field, let error):
            "\(field): \(error)"
        }
    }
}
