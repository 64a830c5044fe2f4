/// A dense tensor with f32, bf16 or f16 storage; row-major.
///
/// The f32 view (`floats()`, `matrix()`) is what computation uses; bf16/f16 are widened exactly.
public struct Tensor: Sendable, Equatable {
    /// Element storage: f32 values, or the raw bit patterns of bf16/f16 values.
    public enum Storage: Sendable, Equatable {
        case f32([Float])
        case bf16([UInt16])
        case f16([UInt16])
    }

    public let shape: [Int]
    public let storage: Storage

    /// Creates a tensor from storage; the element count must equal the product of `shape`.
    public init(shape: [Int], storage: Storage) throws(TensorError) {
        let count = try Self.elementCount(of: shape)
        let stored: Int
        switch storage {
        case .f32(let values): stored = values.count
        case .bf16(let bits), .f16(let bits): stored = bits.count
        }
        guard stored == count else {
            throw .elementCount(shape: shape, expected: count, got: stored)
        }
        self.shape = shape
        self.storage = storage
    }

    /// Creates a tensor of `dtype` from f32 values, narrowing with round-to-nearest-even.
    public init(shape: [Int], floats: [Float], dtype: DType = .f32) throws(TensorError) {
        switch dtype {
        case .f32: try self.init(shape: shape, storage: .f32(floats))
        case .bf16: try self.init(shape: shape, storage: .bf16(floats.map(HalfPrecision.bfloat16(from:))))
        case .f16: try self.init(shape: shape, storage: .f16(floats.map(HalfPrecision.float16(from:))))
        }
    }

    /// Creates an f32 tensor holding a matrix, shaped `[rows, columns]` unless `shape` says otherwise.
    public init(_ matrix: Matrix, shape: [Int]? = nil, dtype: DType = .f32) throws(TensorError) {
        try self.init(shape: shape ?? [matrix.rows, matrix.columns], floats: matrix.values, dtype: dtype)
    }

    /// Decodes `bytes` (little-endian, row-major) of `dtype` and `shape`.
    public init(dtype: DType, shape: [Int], bytes: UnsafeRawBufferPointer) throws(TensorError) {
        let expected = try Self.byteCount(of: shape, dtype: dtype)
        guard bytes.count == expected else {
            throw .byteCount(dtype: dtype, shape: shape, expected: expected, got: bytes.count)
        }
        let count = expected / dtype.byteWidth
        switch dtype {
        case .f32:
            self.shape = shape
            self.storage = .f32(dtype.decodeFloats(bytes))
        case .bf16, .f16:
            let bits = [UInt16](unsafeUninitializedCapacity: count) { buffer, initialized in
                for index in 0..<count {
                    buffer[index] = UInt16(
                        littleEndian: bytes.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self))
                }
                initialized = count
            }
            self.shape = shape
            self.storage = dtype == .bf16 ? .bf16(bits) : .f16(bits)
        }
    }

    public var dtype: DType {
        switch self.storage {
        case .f32: .f32
        case .bf16: .bf16
        case .f16: .f16
        }
    }

    /// Product of the shape.
    public var elementCount: Int { self.shape.reduce(1, *) }

    /// The values widened to f32.
    public func floats() -> [Float] {
        switch self.storage {
        case .f32(let values): values
        case .bf16(let bits): bits.map(HalfPrecision.float(fromBFloat16:))
        case .f16(let bits): bits.map(HalfPrecision.float(fromFloat16:))
        }
    }

    /// The tensor as a `[product of leading dims, last dim]` f32 matrix: `[B, S, H]` → `[B·S, H]`.
    public func matrix() -> Matrix {
        let columns = self.shape.last ?? 1
        let rows = columns == 0 ? 0 : self.elementCount / columns
        return Matrix(rows: rows, columns: columns, values: self.floats())
    }

    /// The same values in another dtype (narrowing rounds to nearest even).
    public func converted(to dtype: DType) -> Tensor {
        if dtype == self.dtype { return self }
        // The shape is already validated, so this cannot throw.
        return try! Tensor(shape: self.shape, floats: self.floats(), dtype: dtype)
    }

    /// Little-endian bytes of the stored elements.
    public func bytes() -> [UInt8] {
        switch self.storage {
        case .f32(let values): return DType.f32.encodeBytes(values)
        case .bf16(let bits), .f16(let bits):
            var bytes = [UInt8]()
            bytes.reserveCapacity(bits.count * 2)
            for value in bits {
                bytes.append(UInt8(truncatingIfNeeded: value))
                bytes.append(UInt8(truncatingIfNeeded: value >> 8))
            }
            return bytes
        }
    }

    /// Product of `shape`, checking that no dimension is negative and that the product does not overflow.
    public static func elementCount(of shape: [Int]) throws(TensorError) -> Int {
        var count = 1
        for dimension in shape {
            guard dimension >= 0 else { throw .negativeDimension(shape: shape) }
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            guard !overflow else { throw .tooLarge(shape: shape) }
            count = product
        }
        return count
    }

    /// Bytes of a `shape` tensor of `dtype`: `product(shape) · width`, refused when it does not fit an `Int`.
    public static func byteCount(of shape: [Int], dtype: DType) throws(TensorError) -> Int {
        let (bytes, overflow) = try Self.elementCount(of: shape).multipliedReportingOverflow(by: dtype.byteWidth)
        guard !overflow else { throw .tooLarge(shape: shape) }
        return bytes
    }
}
