import MoECore
import RealModule

/// An expert FFN on the CPU over OpenBLAS `sgemm`, weights in f32.
///
/// Gated: `A = X · [W_gate; W_up]ᵀ` (`[N, 2I]`, one GEMM), `Z = act(A[:, :I]) ⊙ A[:, I:]`, `Y = Z · W_downᵀ`.
/// Plain: `Z = act(X · W_inᵀ)`, `Y = Z · W_outᵀ`.
/// Clamped SwiGLU (GPT-OSS): as gated, with biases and `Z = (clamp(u) + 1) ⊙ g' σ(α g')`, `g' = min(g, lim)`.
public struct CPUExpertKernel: ExpertKernel {
    private enum Layout: Sendable {
        /// `[2I, H]`: gate rows then up rows; down `[H, I]`.
        case gated(gateUp: [Float], down: [Float], activation: Activation)
        /// As gated, plus biases `[2I]` (gate then up) and `[H]`.
        case clampedSwiGLU(
            gateUp: [Float], down: [Float], gateUpBias: [Float], downBias: [Float], limit: Float, alpha: Float)
        /// in `[I, H]`, out `[H, I]`.
        case plain(input: [Float], output: [Float], activation: Activation)
    }

    public let hiddenSize: Int
    public let intermediateSize: Int
    private let layout: Layout

    /// - Precondition: the weights' shapes fit together (`ExpertWeights.shapeProblem == nil`).
    public init(weights: ExpertWeights) {
        precondition(weights.shapeProblem == nil, weights.shapeProblem ?? "")
        self.hiddenSize = weights.hiddenSize
        self.intermediateSize = weights.intermediateSize
        switch weights {
        case .gated(let gate, let up, let down, let activation):
            self.layout = .gated(gateUp: gate.values + up.values, down: down.values, activation: activation)
        case .plain(let input, let output, let activation):
            self.layout = .plain(input: input.values, output: output.values, activation: activation)
        case .clampedSwiGLU(let gate, let up, let down, let gateBias, let upBias, let downBias, let limit, let alpha):
            self.layout = .clampedSwiGLU(
                gateUp: gate.values + up.values, down: down.values, gateUpBias: gateBias + upBias, downBias: downBias,
                limit: limit, alpha: alpha)
        }
    }

    /// Bytes of weights this kernel holds (f32).
    public var residentBytes: Int {
        let floats =
            switch self.layout {
            case .gated(let gateUp, let down, _): gateUp.count + down.count
            case .clampedSwiGLU(let gateUp, let down, let gateUpBias, let downBias, _, _):
                gateUp.count + down.count + gateUpBias.count + downBias.count
            case .plain(let input, let output, _): input.count + output.count
            }
        return floats * MemoryLayout<Float>.size
    }

    public func forward(_ rows: Matrix) -> Matrix {
        precondition(rows.columns == self.hiddenSize, "expert input: expected \(self.hiddenSize) columns")
        let n = rows.rows, h = self.hiddenSize, i = self.intermediateSize
        guard n > 0 else { return Matrix(rows: 0, columns: h, values: []) }
        // Every buffer below is written whole by a GEMM (β = 0) or the activation pass: no zero-fill needed.
        var output = Self.uninitialized(n * h)
        switch self.layout {
        case .gated(let gateUp, let down, let activation):
            let projected = Self.projectGateUp(rows, gateUp, n: n, i: i, h: h)
            var hidden = Self.uninitialized(n * i)
            projected.withUnsafeBufferPointer { a in
                hidden.withUnsafeMutableBufferPointer { z in
                    for row in 0..<n {
                        let base = row * 2 * i
                        if activation == .silu {
                            // The common case (SwiGLU), vectorised: the scalar exp costs as much as a GEMM at large N.
                            VectorMath.siluProduct(
                                a.baseAddress! + base, a.baseAddress! + base + i, into: z.baseAddress! + row * i,
                                count: i)
                            continue
                        }
                        for column in 0..<i {
                            z[row * i + column] = activation(a[base + column]) * a[base + i + column]
                        }
                    }
                }
            }
            Self.project(hidden, down, into: &output, n: n, outWidth: h, inWidth: i)
        case .clampedSwiGLU(let gateUp, let down, let gateUpBias, let downBias, let limit, let alpha):
            let projected = Self.projectGateUp(rows, gateUp, n: n, i: i, h: h)
            var hidden = Self.uninitialized(n * i)
            for row in 0..<n {
                let base = row * 2 * i
                for column in 0..<i {
                    let gate = min(projected[base + column] + gateUpBias[column], limit)
                    let up = min(max(projected[base + i + column] + gateUpBias[i + column], -limit), limit)
                    hidden[row * i + column] = (up + 1) * (gate / (1 + Float.exp(-alpha * gate)))
                }
            }
            Self.project(hidden, down, into: &output, n: n, outWidth: h, inWidth: i)
            for row in 0..<n {
                for column in 0..<h { output[row * h + column] += downBias[column] }
            }
        case .plain(let input, let outputWeight, let activation):
            var hidden = Self.uninitialized(n * i)
            rows.values.withUnsafeBufferPointer { x in
                input.withUnsafeBufferPointer { w in
                    hidden.withUnsafeMutableBufferPointer { z in
                        BLAS.multiplyTransposed(x.baseAddress!, w.baseAddress!, into: z.baseAddress!, m: n, n: i, k: h)
                        for index in z.indices { z[index] = activation(z[index]) }
                    }
                }
            }
            Self.project(hidden, outputWeight, into: &output, n: n, outWidth: h, inWidth: i)
        }
        return Matrix(rows: n, columns: h, values: output)
    }

    /// `A[n, 2I] = X[n, H] · W_gateupᵀ`.
    private static func projectGateUp(_ rows: Matrix, _ gateUp: [Float], n: Int, i: Int, h: Int) -> [Float] {
        var projected = Self.uninitialized(n * 2 * i)
        rows.values.withUnsafeBufferPointer { x in
            gateUp.withUnsafeBufferPointer { w in
                projected.withUnsafeMutableBufferPointer { a in
                    BLAS.multiplyTransposed(x.baseAddress!, w.baseAddress!, into: a.baseAddress!, m: n, n: 2 * i, k: h)
                }
            }
        }
        return projected
    }

    /// A buffer of `count` floats whose contents the caller overwrites entirely.
    private static func uninitialized(_ count: Int) -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
    }

    /// `Y[n, outWidth] = Z[n, inWidth] · W[outWidth, inWidth]ᵀ`.
    private static func project(
        _ z: [Float], _ w: [Float], into y: inout [Float], n: Int, outWidth: Int, inWidth: Int
    ) {
        z.withUnsafeBufferPointer { z in
            w.withUnsafeBufferPointer { w in
                y.withUnsafeMutableBufferPointer { y in
                    BLAS.multiplyTransposed(
                        z.baseAddress!, w.baseAddress!, into: y.baseAddress!, m: n, n: outWidth, k: inWidth)
                }
            }
        }
    }
}
