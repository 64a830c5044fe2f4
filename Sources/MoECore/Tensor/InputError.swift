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

extension Matrix {
    /// Checks a block of token rows: at least one row, `expectedWidth` columns, every value finite.
    /// - Parameter shape: the shape as sent, for messages.
    public func validateTokenRows(field: String, expectedWidth: Int, shape: [Int]) throws(InputError) {
        guard self.columns == expectedWidth else {
            throw .hiddenSize(field: field, expected: expectedWidth, got: self.columns)
        }
        guard self.rows > 0 else { throw .emptyBatch(field: field, shape: shape) }
        let firstNonFinite = self.values.withUnsafeBufferPointer { values -> Int? in
            // Sum-free scan: a single pass that stops at the first NaN/±inf.
            for index in values.indices where !values[index].isFinite { return index }
            return nil
        }
        if let index = firstNonFinite {
            throw .nonFinite(
                field: field, value: self.values[index], row: index / self.columns, column: index % self.columns)
        }
    }
}
