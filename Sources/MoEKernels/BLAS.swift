import COpenBLAS
import MoECore

/// The few OpenBLAS entry points MoEMesh uses. Each makes sure this process's kernel set is chosen first
/// (`BLASKernelSet.current`).
public enum BLAS {
    /// `C[M, N] = A[M, K] · B[N, K]ᵀ` (row-major; B in the `[out, in]` layout of checkpoint weights); C's rows are
    /// `ldc` apart (default N: a whole matrix; more: columns of a wider one).
    @inlinable
    public static func multiplyTransposed(
        _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into c: UnsafeMutablePointer<Float>,
        m: Int, n: Int, k: Int, ldc: Int? = nil
    ) {
        guard m > 0, n > 0 else { return }
        _ = BLASKernelSet.current
        cblas_sgemm(
            CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k),
            1, a, Int32(k), b, Int32(k), 0, c, Int32(ldc ?? n))
    }

    /// `y[N] = W[N, K] · x[K]` (row-major W): one row of activations. A matrix-vector product reads each weight once
    /// as it goes; `sgemm` with M = 1 first packs (copies) the whole of W, which takes most of its time (a 2816 × 1024
    /// f32 projection: ~0.47 ms against ~1.3 ms on these machines).
    @inlinable
    public static func multiplyVector(
        _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, n: Int, k: Int
    ) {
        guard n > 0 else { return }
        _ = BLASKernelSet.current
        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(n), Int32(k), 1, w, Int32(k), x, 1, 0, y, 1)
    }

    /// `Y[M, N] = X[M, K] · W[N, K]ᵀ` for matrices.
    public static func multiplyTransposed(_ x: Matrix, _ weight: Matrix) -> Matrix {
        precondition(x.columns == weight.columns, "multiply: inner sizes \(x.columns) and \(weight.columns) differ")
        let count = x.rows * weight.rows
        let values = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            x.values.withUnsafeBufferPointer { a in
                weight.values.withUnsafeBufferPointer { b in
                    if x.columns == 0 {
                        buffer.initialize(repeating: 0)
                    } else {
                        multiplyTransposed(
                            a.baseAddress!, b.baseAddress!, into: buffer.baseAddress!,
                            m: x.rows, n: weight.rows, k: x.columns)
                    }
                }
            }
            initialized = count
        }
        return Matrix(rows: x.rows, columns: weight.rows, values: values)
    }

    /// Threads OpenBLAS uses for one call; process-wide.
    public static var threadCount: Int {
        get {
            _ = BLASKernelSet.current
            return Int(openblas_get_num_threads())
        }
        set {
            _ = BLASKernelSet.current
            openblas_set_num_threads(Int32(max(1, newValue)))
        }
    }
}
