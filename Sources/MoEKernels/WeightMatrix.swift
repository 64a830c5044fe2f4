import CQuantKernels
import Dispatch
import MoECore
import Synchronization

/// A weight matrix `W [rows, columns]` (`[out, in]`, as checkpoints store it) kept in its storage precision, and the
/// product `Y [m, rows] = X [m, columns] · Wᵀ` over it with f32 activations and accumulation.
///
/// Few rows (decode, `m ≤ directRowLimit`) go to the direct kernels of `CQuantKernels`, which read each
/// stored weight once for all rows (tiles of 4 weight rows × up to 4 activation rows; bf16 and int8 widened in
/// registers), so a decode step streams the weights at the memory's speed. More rows (prefill) go to OpenBLAS
/// `sgemm`: f32 directly; bf16 and int8 a block of weight rows at a time widened into a small f32 buffer, so the
/// widening costs `O(rows · columns)` against the GEMM's `O(m · rows · columns)`.
public struct WeightMatrix: Sendable {
    public enum Storage: Sendable {
        case f32([Float])
        case bf16([UInt16])
        /// `W[j, k] = values[j, k] · scales[j]`.
        case int8(values: [Int8], scales: [Float])
    }

    public let rows: Int
    public let columns: Int
    public let storage: Storage

    /// Most activation rows the direct kernels take; beyond it `sgemm` (it packs its operands first, which costs
    /// more than the product itself below this many rows). Measured by `moemesh kernels decode` (BENCHMARKS.md,
    /// "Decode at the memory's speed"; AMD EPYC, 2 vCPUs): f32 direct was the quicker up to 128 rows and `sgemm` from
    /// 256; bf16 and int8 (which `sgemm` reaches only through a widened copy) were even with it from 256 to 1,024.
    public static let directRowLimit = 128
    /// Bytes of f32 weights widened at a time on the prefill path (within L2/L3, and wide enough for sgemm).
    static let widenedBlockBytes = 4 << 20

    public var precision: WeightPrecision {
        switch self.storage {
        case .f32: .f32
        case .bf16: .bf16
        case .int8: .int8
        }
    }

    /// Bytes the weights hold (scales included).
    public var bytes: Int {
        switch self.storage {
        case .f32(let values): values.count * 4
        case .bf16(let values): values.count * 2
        case .int8(let values, let scales): values.count + scales.count * 4
        }
    }

    /// Stores `values` (`[rows, columns]`, row-major) in `precision`.
    /// - Throws: `WeightPrecisionError` for a precision this CPU path does not hold (fp8) or int8 of non-finite
    ///   weights.
    public init(rows: Int, columns: Int, values: [Float], precision: WeightPrecision) throws(WeightPrecisionError) {
        precondition(values.count == rows * columns, "weights: expected \(rows * columns) values, got \(values.count)")
        try self.init(stacking: [Matrix(rows: rows, columns: columns, values: values)], precision: precision)
    }

    /// Stores the rows of `parts` one after another (`[Σ rows, columns]`; e.g. gate then up) in `precision`, each
    /// part converted straight into its place: no stacked f32 copy is made.
    public init(stacking parts: [Matrix], precision: WeightPrecision) throws(WeightPrecisionError) {
        let columns = parts.first?.columns ?? 0
        precondition(parts.allSatisfy { $0.columns == columns }, "stacked weights: parts of different widths")
        let rows = parts.reduce(0) { $0 + $1.rows }, count = rows * columns
        self.rows = rows
        self.columns = columns
        switch precision {
        case .f32:
            self.storage = .f32(parts.count == 1 ? parts[0].values : parts.flatMap(\.values))
        case .bf16:
            let stored = [UInt16](unsafeUninitializedCapacity: count) { buffer, initialized in
                var offset = 0
                for part in parts {
                    part.values.withUnsafeBufferPointer {
                        mmq_bf16_quantize($0.baseAddress, part.values.count, buffer.baseAddress! + offset)
                    }
                    offset += part.values.count
                }
                initialized = count
            }
            self.storage = .bf16(stored)
        case .int8:
            var scales = [Float](repeating: 0, count: rows)
            var nonFinite = 0
            let stored = [Int8](unsafeUninitializedCapacity: count) { buffer, initialized in
                var row = 0
                scales.withUnsafeMutableBufferPointer { s in
                    for part in parts {
                        part.values.withUnsafeBufferPointer { w in
                            nonFinite += mmq_int8_quantize(
                                w.baseAddress, part.rows, columns, buffer.baseAddress! + row * columns,
                                s.baseAddress! + row)
                        }
                        row += part.rows
                    }
                }
                initialized = count
            }
            guard nonFinite == 0 else { throw .nonFiniteWeights(count: nonFinite, precision: precision) }
            self.storage = .int8(values: stored, scales: scales)
        case .fp8:
            throw .unsupportedOnCPU(precision)
        }
    }

    /// The weights widened to f32 (`[rows, columns]`): what the products compute with.
    public func dequantized() -> [Float] {
        [Float](unsafeUninitializedCapacity: self.rows * self.columns) { buffer, initialized in
            self.widen(rows: 0..<self.rows, into: buffer.baseAddress!)
            initialized = self.rows * self.columns
        }
    }

    /// The two ways a product is computed.
    public enum ProductKernel: String, Sendable, CaseIterable {
        /// `CQuantKernels`' direct kernels: each stored weight read once for all rows.
        case direct
        /// OpenBLAS `sgemm` (bf16 and int8 over blocks widened to f32).
        case sgemm
    }

    /// `y [m, rows] = x [m, columns] · Wᵀ`, both row-major: the direct kernels up to `directRowLimit` rows,
    /// `sgemm` beyond.
    public func multiply(_ x: UnsafePointer<Float>, rows m: Int, into y: UnsafeMutablePointer<Float>) {
        let kernel: ProductKernel = m <= Self.directRowLimit ? .direct : .sgemm
        self.multiply(x, rows: m, into: y, kernel: kernel)
    }

    /// `y [m, rows] = x [m, columns] · Wᵀ` on `kernel` (benchmarks compare the two).
    public func multiply(
        _ x: UnsafePointer<Float>, rows m: Int, into y: UnsafeMutablePointer<Float>, kernel: ProductKernel
    ) {
        guard m > 0, self.rows > 0 else { return }
        if kernel == .direct {
            return self.multiplyDirect(x, rows: m, into: y, path: QuantizedKernelPath.best)
        }
        switch self.storage {
        case .f32(let values):
            values.withUnsafeBufferPointer { w in
                BLAS.multiplyTransposed(x, w.baseAddress!, into: y, m: m, n: self.rows, k: self.columns)
            }
        case .bf16, .int8:
            self.multiplyWidened(x, rows: m, into: y)
        }
    }

    /// The direct kernels on `path`, weight rows split over `BLAS.threadCount` threads. Each output row is the same
    /// sequence of operations whatever `m` is: a row's answer alone and among others is equal bit for bit.
    func multiplyDirect(
        _ x: UnsafePointer<Float>, rows m: Int, into y: UnsafeMutablePointer<Float>, path: QuantizedKernelPath
    ) {
        let n = self.rows, k = self.columns
        // Below ~64 K weights one thread is quicker than waking another. Otherwise the weight rows go in pieces of
        // whole 4-row tiles, 8 per thread, that each thread takes in turn: a worker that wakes late (tens of µs, a
        // good part of a decode product) takes fewer pieces instead of leaving the caller to wait for its share.
        let threads = n * k < 65_536 ? 1 : max(1, min(BLAS.threadCount, n / 4))
        let chunk = max(4, ((n + threads * 8 - 1) / (threads * 8) + 3) & ~3)
        let operands = Operands(x: x, y: y)
        let run = { @Sendable (start: Int, end: Int) in
            let x = operands.x, y = operands.y
            switch self.storage {
            case .f32(let values):
                values.withUnsafeBufferPointer { w in
                    mmq_f32_matmul_t(path.rawValue, x, m, w.baseAddress, start, end, k, y, n)
                }
            case .bf16(let values):
                values.withUnsafeBufferPointer { w in
                    mmq_bf16_matmul_t(path.rawValue, x, m, w.baseAddress, start, end, k, y, n)
                }
            case .int8(let values, let scales):
                values.withUnsafeBufferPointer { w in
                    scales.withUnsafeBufferPointer { s in
                        mmq_int8_matmul_t(path.rawValue, x, m, w.baseAddress, s.baseAddress, start, end, k, y, n)
                    }
                }
            }
        }
        if threads == 1 { return run(0, n) }
        let nextPiece = Atomic(0)
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            while true {
                let start = nextPiece.add(1, ordering: .relaxed).oldValue * chunk
                guard start < n else { return }
                run(start, min(n, start + chunk))
            }
        }
    }

    /// Prefill: blocks of weight rows (`widenedBlockBytes` of f32) widened to f32 on every thread, each multiplied by
    /// `sgemm` into its columns of `y`.
    func multiplyWidened(
        _ x: UnsafePointer<Float>, rows m: Int, into y: UnsafeMutablePointer<Float>,
        blockBytes: Int = Self.widenedBlockBytes
    ) {
        let n = self.rows, k = self.columns
        let block = min(n, max(16, blockBytes / (4 * max(1, k))))
        let widened = UnsafeMutablePointer<Float>.allocate(capacity: block * k)
        defer { widened.deallocate() }
        for start in stride(from: 0, to: n, by: block) {
            let count = min(block, n - start)
            self.widenInParallel(rows: start..<(start + count), into: widened)
            BLAS.multiplyTransposed(x, widened, into: y + start, m: m, n: count, k: k, ldc: n)
        }
    }

    /// `widen` split over `BLAS.threadCount` threads.
    private func widenInParallel(rows range: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        let threads = max(1, min(BLAS.threadCount, range.count / 8))
        if threads == 1 { return self.widen(rows: range, into: out) }
        let share = (range.count + threads - 1) / threads
        let target = Operands(x: UnsafePointer(out), y: out)
        DispatchQueue.concurrentPerform(iterations: threads) { part in
            let start = range.lowerBound + part * share, end = min(range.upperBound, start + share)
            if start < end {
                self.widen(rows: start..<end, into: target.y + (start - range.lowerBound) * self.columns)
            }
        }
    }

    /// Rows `range` of W as f32 into `out` (`[range.count, columns]`).
    private func widen(rows range: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        let k = self.columns
        switch self.storage {
        case .f32(let values):
            values.withUnsafeBufferPointer {
                out.update(from: $0.baseAddress! + range.lowerBound * k, count: range.count * k)
            }
        case .bf16(let values):
            values.withUnsafeBufferPointer {
                mmq_bf16_dequantize($0.baseAddress! + range.lowerBound * k, range.count * k, out)
            }
        case .int8(let values, let scales):
            values.withUnsafeBufferPointer { w in
                scales.withUnsafeBufferPointer { s in
                    mmq_int8_dequantize(
                        w.baseAddress! + range.lowerBound * k, s.baseAddress! + range.lowerBound, range.count, k, out)
                }
            }
        }
    }
}

/// The instruction set of the bf16/int8 kernels: the widest this CPU has, found at run time.
public enum QuantizedKernelPath: Int32, Sendable, CaseIterable, CustomStringConvertible {
    case scalar = 0, avx2 = 1, avx512 = 2

    /// The path the products use on this CPU.
    public static let best = QuantizedKernelPath(rawValue: mmq_best_path()) ?? .scalar

    /// Whether this CPU runs `self`.
    public var isSupported: Bool { mmq_path_supported(self.rawValue) != 0 }

    public var description: String { String(cString: mmq_path_name(self.rawValue)) }
}

/// Why weights cannot be stored in a precision.
public enum WeightPrecisionError: Error, Sendable, Equatable, CustomStringConvertible {
    case unsupportedOnCPU(WeightPrecision)
    case unsupportedOnDevice(WeightPrecision, device: String, supported: [WeightPrecision])
    case nonFiniteWeights(count: Int, precision: WeightPrecision)

    public var description: String {
        switch self {
        case .unsupportedOnCPU(let precision):
            "\(precision) weights need a CUDA device (`--device cuda`); on the CPU choose f32, bf16 or int8"
        case .unsupportedOnDevice(let precision, let device, let supported):
            "\(precision) weights are not available on \(device); expected one of "
                + supported.map(\.rawValue).joined(separator: ", ")
        case .nonFiniteWeights(let count, let precision):
            "\(count) weights are NaN or infinite; \(precision) cannot hold them (serve this expert in f32 or bf16)"
        }
    }
}

/// The activations and output of one product, shared by its worker threads; each writes only its own columns of y.
private struct Operands: @unchecked Sendable {
    let x: UnsafePointer<Float>
    let y: UnsafeMutablePointer<Float>
}
