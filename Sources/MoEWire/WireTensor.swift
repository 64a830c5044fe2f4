#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
import MoECore
import MoEProto

extension Moemesh_V1_DType {
    /// The core dtype, or nil for `DTYPE_UNSPECIFIED` and values this build does not know.
    public var coreDType: DType? {
        switch self {
        case .f32: .f32
        case .bf16: .bf16
        case .f16: .f16
        default: nil
        }
    }

    public init(_ dtype: DType) {
        switch dtype {
        case .f32: self = .f32
        case .bf16: self = .bf16
        case .f16: self = .f16
        }
    }

    /// The name to show in messages.
    var displayName: String {
        switch self {
        case .unspecified: "DTYPE_UNSPECIFIED"
        case .UNRECOGNIZED(let value): "unknown dtype \(value)"
        default: self.coreDType.map(\.description) ?? "\(self)"
        }
    }
}

/// Token rows received over the wire, validated and widened to f32.
public struct DecodedRows: Sendable {
    /// `[T, H]` (leading dims flattened).
    public let matrix: Matrix
    /// The shape as sent.
    public let shape: [Int]
    /// The dtype as sent (answers go back in it).
    public let dtype: DType
}

extension Moemesh_V1_Tensor {
    /// Validates and decodes token rows: dtype f32/bf16/f16, `allowedRanks` dimensions, data length matching the
    /// shape, last dimension `hiddenSize`, at least one row, every value finite.
    public func decodeTokenRows(
        field: String, hiddenSize: Int, allowedRanks: Set<Int>, shapeDescription: String
    ) throws(InputError) -> DecodedRows {
        guard let dtype = self.dtype.coreDType else {
            throw self.dtype == .unspecified && self.shape.isEmpty && self.data.isEmpty
                ? .missingTensor(field: field) : .unsupportedDType(field: field, got: self.dtype.displayName)
        }
        let shape = self.shape.map { Int(clamping: $0) }
        guard allowedRanks.contains(shape.count) else {
            throw .rank(field: field, expected: shapeDescription, shape: shape)
        }
        let bytes: Int
        do { bytes = try Tensor.byteCount(of: shape, dtype: dtype) } catch { throw .tensor(field: field, error) }
        let count = bytes / dtype.byteWidth
        guard self.data.count == bytes else {
            throw .tensor(field: field, .byteCount(dtype: dtype, shape: shape, expected: bytes, got: self.data.count))
        }
        let columns = shape.last!
        guard columns == hiddenSize else { throw .hiddenSize(field: field, expected: hiddenSize, got: columns) }
        guard count > 0 else { throw .emptyBatch(field: field, shape: shape) }
        let values = self.data.withUnsafeBytes { dtype.decodeFloats($0) }
        // One pass that stops at the first NaN or ±inf.
        if let index = values.firstIndex(where: { !$0.isFinite }) {
            throw .nonFinite(field: field, value: values[index], row: index / columns, column: index % columns)
        }
        return DecodedRows(
            matrix: Matrix(rows: count / columns, columns: columns, values: values), shape: shape, dtype: dtype)
    }

    /// Encodes a matrix as a tensor of `dtype` and `shape` (default `[rows, columns]`).
    public init(_ matrix: Matrix, shape: [Int]? = nil, dtype: DType) {
        self.init()
        self.dtype = Moemesh_V1_DType(dtype)
        self.shape = (shape ?? [matrix.rows, matrix.columns]).map(Int64.init)
        self.data = Self.encode(count: matrix.values.count, dtype: dtype) { destination in
            matrix.values.withUnsafeBufferPointer { dtype.encode($0, into: destination) }
        }
    }

    /// Builds `count` elements of `dtype` straight into a new `Data` from f32 values that `fill` writes.
    /// f32 is written in place; bf16/f16 go through one f32 scratch buffer.
    public static func encode(
        count: Int, dtype: DType, fill: (UnsafeMutableRawBufferPointer) -> Void
    ) -> Data {
        var data = Data(count: count * dtype.byteWidth)
        data.withUnsafeMutableBytes { fill($0) }
        return data
    }

    /// A tensor of `dtype` filled by `gather`, which writes `count` f32 values: f32 in place in the message
    /// buffer, bf16/f16 through one scratch buffer.
    public init(count: Int, shape: [Int], dtype: DType, gather: (UnsafeMutableBufferPointer<Float>) -> Void) {
        self.init()
        self.dtype = Moemesh_V1_DType(dtype)
        self.shape = shape.map(Int64.init)
        if dtype == .f32 {
            var data = Data(count: count * 4)
            data.withUnsafeMutableBytes { raw in
                gather(raw.bindMemory(to: Float.self))
            }
            self.data = data
        } else {
            let scratch = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                gather(buffer)
                initialized = count
            }
            self.data = Self.encode(count: count, dtype: dtype) { destination in
                scratch.withUnsafeBufferPointer { dtype.encode($0, into: destination) }
            }
        }
    }
}

extension Moemesh_V1_ForwardRequest {
    /// The request's token rows (`hidden_states`, `[T, H]` or `[B, S, H]`) and what it says about routing
    /// (`token_ids`: none or one per row; `noise_seed`: 0 for the policy's), validated.
    public func decodeInput(hiddenSize: Int) throws(InputError) -> (rows: DecodedRows, routing: RoutingRequest) {
        let rows = try self.hiddenStates.decodeTokenRows(
            field: "hidden_states", hiddenSize: hiddenSize, allowedRanks: [2, 3],
            shapeDescription: "[T, \(hiddenSize)] or [B, S, \(hiddenSize)]")
        if !self.tokenIds.isEmpty && self.tokenIds.count != rows.matrix.rows {
            throw .tokenIDCount(expected: rows.matrix.rows, got: self.tokenIds.count)
        }
        if let token = self.tokenIds.firstIndex(where: { $0 < 0 }) {
            throw .negativeTokenID(token: token, got: self.tokenIds[token])
        }
        let routing = RoutingRequest(
            shape: rows.shape, tokenIDs: self.tokenIds.isEmpty ? nil : self.tokenIds,
            noiseSeed: self.noiseSeed == 0 ? nil : self.noiseSeed)
        return (rows, routing)
    }
}
