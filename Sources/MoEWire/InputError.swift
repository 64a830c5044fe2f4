import MoECore

/// Why a block of token rows sent to a service was refused. Messages say what was expected and what came.
public enum InputError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The largest |x| of `values`: the magnitude an overflow message names.
    public static func largestMagnitude(_ values: [Float]) -> Float { values.reduce(0) { max($0, abs($1)) } }

    /// The tensor field was absent or had no dtype.
    case missingTensor(field: String)
    case unsupportedDType(field: String, got: String)
    case rank(field: String, expected: String, shape: [Int])
    case hiddenSize(field: String, expected: Int, got: Int)
    case emptyBatch(field: String, shape: [Int])
    case nonFinite(field: String, value: Float, row: Int, column: Int)
    case tensor(field: String, TensorError)
    /// `token_ids` must name one id per token when given.
    case tokenIDCount(expected: Int, got: Int)
    /// Token ids are vocabulary indices: never negative.
    case negativeTokenID(token: Int, got: Int64)
    /// Finite inputs whose layer output (`what`: an expert's, or the combined one) overflowed to ±inf or NaN.
    case outputOverflow(field: String, what: String, largestInput: Float)

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
        case .tokenIDCount(let expected, let got):
            "token_ids: expected one per token (\(expected)) or none, got \(got)"
        case .negativeTokenID(let token, let got):
            "token_ids: expected ids of 0 or more (vocabulary indices), got \(got) for token \(token)"
        case .outputOverflow(let field, let what, let largestInput):
            "\(field): \(what) overflowed to inf/NaN for inputs as large as |x| = \(largestInput); expected hidden "
                + "states small enough for a finite output"
        }
    }
}
