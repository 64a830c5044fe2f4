import MoECore
import RealModule

/// An expert FFN on the CPU: weights in f32 (OpenBLAS `sgemm`), bf16 or int8 (`WeightMatrix`), activations f32.
///
/// Gated: `A = X · [W_gate; W_up]ᵀ` (`[N, 2I]`, one product), `Z = act(A[:, :I]) ⊙ A[:, I:]`, `Y = Z · W_downᵀ`.
/// Plain: `Z = act(X · W_inᵀ)`, `Y = Z · W_outᵀ`.
/// Clamped SwiGLU (GPT-OSS): as gated, with biases and `Z = (clamp(u) + 1) ⊙ g' σ(α g')`, `g' = min(g, lim)`.
public struct CPUExpertKernel: ExpertKernel {
    private enum Layout: Sendable {
        /// `[2I, H]`: gate rows then up rows; down `[H, I]`.
        case gated(gateUp: WeightMatrix, down: WeightMatrix, activation: Activation)
        /// As gated, plus biases `[2I]` (gate then up) and `[H]`, kept in f32.
        case clampedSwiGLU(
            gateUp: WeightMatrix, down: WeightMatrix, gateUpBias: [Float], downBias: [Float], limit: Float,
            alpha: Float)
        /// in `[I, H]`, out `[H, I]`.
        case plain(input: WeightMatrix, output: WeightMatrix, activation: Activation)
    }

    public let hiddenSize: Int
    public let intermediateSize: Int
    /// How the weight matrices are stored.
    public let precision: WeightPrecision
    private let layout: Layout

    /// Weights kept in f32.
    /// - Precondition: the weights' shapes fit together (`ExpertWeights.shapeProblem == nil`).
    public init(weights: ExpertWeights) {
        // f32 storage cannot fail.
        self = try! Self(weights: weights, precision: .f32)
    }

    /// Weights stored in `precision` (biases stay f32).
    /// - Precondition: the weights' shapes fit together (`ExpertWeights.shapeProblem == nil`).
    public init(weights: ExpertWeights, precision: WeightPrecision) throws(WeightPrecisionError) {
        precondition(weights.shapeProblem == nil, weights.shapeProblem ?? "")
        self.hiddenSize = weights.hiddenSize
        self.intermediateSize = weights.intermediateSize
        self.precision = precision
        func store(_ parts: Matrix...) throws(WeightPrecisionError) -> WeightMatrix {
            try WeightMatrix(stacking: parts, precision: precision)
        }
        switch weights {
        case .gated(let gate, let up, let down, let activation):
            self.layout = .gated(
                gateUp: try store(gate, up), down: try store(down), activation: activation)
        case .plain(let input, let output, let activation):
            self.layout = .plain(
                input: try store(input), output: try store(output), activation: activation)
        case .clampedSwiGLU(let gate, let up, let down, let gateBias, let upBias, let downBias, let limit, let alpha):
            self.layout = .clampedSwiGLU(
                gateUp: try store(gate, up), down: try store(down), gateUpBias: gateBias + upBias,
                downBias: downBias, limit: limit, alpha: alpha)
        }
    }

    /// Bytes of weights this kernel holds (scales and biases included).
    public var residentBytes: Int {
        switch self.layout {
        case .gated(let gateUp, let down, _): gateUp.bytes + down.bytes
        case .clampedSwiGLU(let gateUp, let down, let gateUpBias, let downBias, _, _):
            gateUp.bytes + down.bytes + (gateUpBias.count + downBias.count) * MemoryLayout<Float>.size
        case .plain(let input, let output, _): input.bytes + output.bytes
        }
    }

    public func forward(_ rows: Matrix) -> Matrix {
        precondition(rows.columns == self.hiddenSize, "expert input: expected \(self.hiddenSize) columns")
        let n = rows.rows, h = self.hiddenSize, i = self.intermediateSize
        guard n > 0 else { return Matrix(rows: 0, columns: h, values: []) }
        // Every buffer below is written whole by a product or the activation pass: no zero-fill needed.
        var output: [Float]
        switch self.layout {
        case .gated(let gateUp, let down, let activation):
            let projected = Self.project(rows.values, gateUp, rows: n)
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
            output = Self.project(hidden, down, rows: n)
        case .clampedSwiGLU(let gateUp, let down, let gateUpBias, let downBias, let limit, let alpha):
            let projected = Self.project(rows.values, gateUp, rows: n)
            var hidden = Self.uninitialized(n * i)
            for row in 0..<n {
                let base = row * 2 * i
                for column in 0..<i {
                    let gate = min(projected[base + column] + gateUpBias[column], limit)
                    let up = min(max(projected[base + i + column] + gateUpBias[i + column], -limit), limit)
                    hidden[row * i + column] = (up + 1) * (gate / (1 + Float.exp(-alpha * gate)))
                }
            }
            output = Self.project(hidden, down, rows: n)
            for row in 0..<n {
                for column in 0..<h { output[row * h + column] += downBias[column] }
            }
        case .plain(let input, let outputWeight, let activation):
            var hidden = Self.project(rows.values, input, rows: n)
            for index in hidden.indices { hidden[index] = activation(hidden[index]) }
            output = Self.project(hidden, outputWeight, rows: n)
        }
        return Matrix(rows: n, columns: h, values: output)
    }

    /// A buffer of `count` floats whose contents the caller overwrites entirely.
    private static func uninitialized(_ count: Int) -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
    }

    /// `Y[n, W.rows] = Z[n, W.columns] · Wᵀ`.
    private static func project(_ z: [Float], _ weight: WeightMatrix, rows n: Int) -> [Float] {
        var y = Self.uninitialized(n * weight.rows)
        z.withUnsafeBufferPointer { z in
            y.withUnsafeMutableBufferPointer { y in weight.multiply(z.baseAddress!, rows: n, into: y.baseAddress!) }
        }
        return y
    }
}
