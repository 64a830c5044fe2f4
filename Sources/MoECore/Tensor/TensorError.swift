/// Why a tensor could not be built or accepted. Messages say what was expected and what came.
public enum TensorError: Error, Sendable, Equatable, CustomStringConvertible {
    case negativeDimension(shape: [Int])
    case tooLarge(shape: [Int])
    case elementCount(shape: [Int], expected: Int, got: Int)
    case byteCount(dtype: DType, shape: [Int], expected: Int, got: Int)

    public var description: String {
        switch self {
        case .negativeDimension(let shape):
            "shape \(shape) has a negative dimension"
        case .tooLarge(let shape):
            "shape \(shape) has more elements than can be addressed"
        case .elementCount(let shape, let expected, let got):
            "element count: expected \(expected) for shape \(shape), got \(got)"
        case .byteCount(let dtype, let shape, let expected, let got):
            "data length: expected \(expected) bytes for \(dtype) \(shape), got \(got)"
        }
    }
}
