import CQuantKernels
import Dispatch
import MoECore

#if canImport(Glibc)
    import Glibc
#endif

/// Weights of one byte each with block scales, as the CUDA backend holds int8 and fp8 experts:
/// `W[r, c] = q[r, c] · scales[(r / blockRows) · scaleColumns + c / blockColumns]`, `q` int8 or e4m3fn
/// (`expert_kernels.cu` reads the same layout).
///
/// int8 is per output channel (`1 × columns` blocks, `scale = max|W_row| / 127`, as the CPU's `WeightMatrix`). fp8 has
/// `128 × 128` blocks (`scale = max|W_block| / 448`), DeepSeek-V3's layout, when every stacked part has a multiple of
/// 128 rows (a checkpoint shipped that way comes back byte for byte when its scales were `max / 448`), and `1 × 128`
/// blocks otherwise.
public struct BlockQuantizedWeights: Sendable {
    /// The byte format, as the kernels' `format` argument.
    public enum Format: Int32, Sendable {
        case int8 = 0
        case e4m3 = 1

        /// The format of `precision`; nil for f32 and bf16.
        public init?(_ precision: WeightPrecision) {
            switch precision {
            case .int8: self = .int8
            case .fp8: self = .e4m3
            case .f32, .bf16: return nil
            }
        }
    }

    public let format: Format
    public let rows: Int
    public let columns: Int
    public let blockRows: Int
    public let blockColumns: Int
    /// `[rows, columns]`, row-major.
    public let values: [UInt8]
    /// `[⌈rows / blockRows⌉, scaleColumns]`.
    public let scales: [Float]

    public var scaleColumns: Int { (self.columns + self.blockColumns - 1) / self.blockColumns }

    public var precision: WeightPrecision { self.format == .int8 ? .int8 : .fp8 }

    /// Bytes held, scales included.
    public var bytes: Int { self.values.count + 4 * self.scales.count }

    /// The block shape `precision` uses for parts of `partRows` rows and `columns` columns.
    public static func blockShape(
        _ precision: WeightPrecision, partRows: [Int], columns: Int
    ) -> (rows: Int, columns: Int) {
        switch precision {
        case .fp8: (partRows.allSatisfy { $0 % 128 == 0 } ? 128 : 1, 128)
        default: (1, max(1, columns))
        }
    }

    /// Bytes `precision` holds for parts of `partRows` rows and `columns` columns stacked, scales included.
    public static func bytes(_ precision: WeightPrecision, partRows: [Int], columns: Int) -> Int {
        let block = Self.blockShape(precision, partRows: partRows, columns: columns)
        let scaleRows = partRows.reduce(0) { $0 + ($1 + block.rows - 1) / block.rows }
        return partRows.reduce(0, +) * columns + 4 * scaleRows * ((columns + block.columns - 1) / block.columns)
    }

    /// e4m3fn bits of `value`, rounded to nearest even; beyond ±448, ±448.
    public static func e4m3Bits(_ value: Float) -> UInt8 { mmq_e4m3_from_float(value) }

    /// The value of e4m3fn `bits` (NaN for 0x7F and 0xFF).
    public static func e4m3Value(_ bits: UInt8) -> Float { mmq_e4m3_to_float(bits) }

    /// Quantises the rows of `parts` one after another (`[Σ rows, columns]`; e.g. gate then up).
    /// - Throws: `WeightPrecisionError` for a precision other than int8 and fp8, or for non-finite weights.
    public init(stacking parts: [Matrix], precision: WeightPrecision) throws(WeightPrecisionError) {
        let columns = parts.first?.columns ?? 0
        precondition(parts.allSatisfy { $0.columns == columns }, "stacked weights: parts of different widths")
        guard let format = Format(precision) else {
            throw .unsupportedOnDevice(precision, device: "block-quantised weights", supported: [.int8, .fp8])
        }
        let block = Self.blockShape(precision, partRows: parts.map(\.rows), columns: columns)
        let rows = parts.reduce(0) { $0 + $1.rows }
        let scaleColumns = (columns + block.columns - 1) / block.columns
        let (pieces, scaleRows) = Piece.split(parts.map(\.rows), blockRows: block.rows, weights: rows * columns)
        var scales = [Float](repeating: 0, count: scaleRows * scaleColumns)
        var nonFiniteCounts = [Int](repeating: 0, count: pieces.count)
        let values = [UInt8](unsafeUninitializedCapacity: rows * columns) { buffer, initialized in
            scales.withUnsafeMutableBufferPointer { s in
                nonFiniteCounts.withUnsafeMutableBufferPointer { counts in
                    let outputs = QuantizationOutputs(
                        values: buffer.baseAddress!, scales: s.baseAddress!, counts: counts)
                    DispatchQueue.concurrentPerform(iterations: pieces.count) { index in
                        let piece = pieces[index]
                        let part = parts[piece.part]
                        let q = outputs.values + piece.outputRow * columns
                        let pieceScales = outputs.scales + piece.scaleRow * scaleColumns
                        outputs.counts[index] = part.values.withUnsafeBufferPointer { w in
                            let weights = w.baseAddress! + piece.firstRow * columns
                            switch format {
                            case .int8:
                                return q.withMemoryRebound(to: Int8.self, capacity: piece.rows * columns) {
                                    mmq_int8_quantize(weights, piece.rows, columns, $0, pieceScales)
                                }
                            case .e4m3:
                                return mmq_e4m3_quantize(
                                    weights, piece.rows, columns, block.rows, block.columns, q, pieceScales)
                            }
                        }
                    }
                }
            }
            initialized = rows * columns
        }
        let nonFinite = nonFiniteCounts.reduce(0, +)
        guard nonFinite == 0 else { throw .nonFiniteWeights(count: nonFinite, precision: precision) }
        self.format = format
        self.rows = rows
        self.columns = columns
        self.blockRows = block.rows
        self.blockColumns = block.columns
        self.values = values
        self.scales = scales
    }

    /// The scale of weight `[r, c]`.
    public func scale(row r: Int, column c: Int) -> Float {
        self.scales[(r / self.blockRows) * self.scaleColumns + c / self.blockColumns]
    }

    /// Rows `range` of the weights widened to f32 (`[range.count, columns]`): what the kernels compute with.
    public func dequantized(rows range: Range<Int>? = nil) -> Matrix {
        let range = range ?? 0..<self.rows
        var out = [Float](repeating: 0, count: range.count * self.columns)
        for r in range {
            for c in 0..<self.columns {
                let byte = self.values[r * self.columns + c]
                let level = self.format == .int8 ? Float(Int8(bitPattern: byte)) : Self.e4m3Value(byte)
                out[(r - range.lowerBound) * self.columns + c] = level * self.scale(row: r, column: c)
            }
        }
        return Matrix(rows: range.count, columns: self.columns, values: out)
    }
}

extension ExpertWeights {
    /// Bytes these weights hold as `BlockQuantizedWeights` of `precision` (gate and up stacked), biases in f32.
    public func blockQuantizedBytes(_ precision: WeightPrecision) -> Int {
        let h = self.hiddenSize, i = self.intermediateSize
        switch self {
        case .gated:
            return BlockQuantizedWeights.bytes(precision, partRows: [i, i], columns: h)
                + BlockQuantizedWeights.bytes(precision, partRows: [h], columns: i)
        case .plain:
            return BlockQuantizedWeights.bytes(precision, partRows: [i], columns: h)
                + BlockQuantizedWeights.bytes(precision, partRows: [h], columns: i)
        case .clampedSwiGLU:
            return BlockQuantizedWeights.bytes(precision, partRows: [i, i], columns: h)
                + BlockQuantizedWeights.bytes(precision, partRows: [h], columns: i) + 4 * (2 * i + h)
        }
    }

    /// These weights as `precision`'s CUDA kernels compute with them: each projection quantised to block-scaled bytes
    /// (gate and up stacked, as the kernels hold them) and widened back to f32. The CPU reference for those kernels.
    public func roundTripped(through precision: WeightPrecision) throws(WeightPrecisionError) -> ExpertWeights {
        func stacked(_ gate: Matrix, _ up: Matrix) throws(WeightPrecisionError) -> (Matrix, Matrix) {
            let weights = try BlockQuantizedWeights(stacking: [gate, up], precision: precision)
            return (weights.dequantized(rows: 0..<gate.rows), weights.dequantized(rows: gate.rows..<weights.rows))
        }
        func single(_ matrix: Matrix) throws(WeightPrecisionError) -> Matrix {
            try BlockQuantizedWeights(stacking: [matrix], precision: precision).dequantized()
        }
        switch self {
        case .gated(let gate, let up, let down, let activation):
            let (g, u) = try stacked(gate, up)
            return .gated(gate: g, up: u, down: try single(down), activation: activation)
        case .plain(let input, let output, let activation):
            return .plain(input: try single(input), output: try single(output), activation: activation)
        case .clampedSwiGLU(let gate, let up, let down, let gateBias, let upBias, let downBias, let limit, let alpha):
            let (g, u) = try stacked(gate, up)
            return .clampedSwiGLU(
                gate: g, up: u, down: try single(down), gateBias: gateBias, upBias: upBias, downBias: downBias,
                limit: limit, alpha: alpha)
        }
    }
}

/// Rows `[firstRow, firstRow + rows)` of part `part`, written from row `outputRow` and scale row `scaleRow` on.
private struct Piece: Sendable {
    let part: Int
    let firstRow: Int
    let rows: Int
    let outputRow: Int
    let scaleRow: Int

    /// Parts of `partRows` rows stacked, cut into pieces of whole blocks of rows for all cores (a Mixtral-size
    /// projection is 10⁸ weights); each part starts on a block boundary (int8: every row; fp8: multiples of 128 rows,
    /// or every row), so its scale rows follow the previous part's. Also returns the scale rows in all.
    static func split(_ partRows: [Int], blockRows: Int, weights: Int) -> (pieces: [Piece], scaleRows: Int) {
        let cores = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let piecesPerPart = max(1, min(4 * cores, weights / (1 << 18)))
        var pieces: [Piece] = []
        var row = 0, scaleRow = 0
        for (index, rows) in partRows.enumerated() {
            let blocks = (rows + blockRows - 1) / blockRows
            let blocksPerPiece = max(1, (blocks + piecesPerPart - 1) / piecesPerPart)
            for first in stride(from: 0, to: blocks, by: blocksPerPiece) {
                let firstRow = first * blockRows
                pieces.append(
                    Piece(
                        part: index, firstRow: firstRow, rows: min(rows - firstRow, blocksPerPiece * blockRows),
                        outputRow: row + firstRow, scaleRow: scaleRow + first))
            }
            row += rows
            scaleRow += blocks
        }
        return (pieces, scaleRow)
    }
}

/// Where the pieces write: disjoint rows of the values and scales, one count each.
private struct QuantizationOutputs: @unchecked Sendable {
    let values: UnsafeMutablePointer<UInt8>
    let scales: UnsafeMutablePointer<Float>
    let counts: UnsafeMutableBufferPointer<Int>
}
