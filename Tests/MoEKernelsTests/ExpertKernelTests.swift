import MoECore
import RealModule
import Testing

@testable import MoEKernels

/// Seeded uniform values in [-scale, scale).
private func randomValues(_ count: Int, seed: UInt64, scale: Float) -> [Float] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
    }
}

private func randomMatrix(_ rows: Int, _ columns: Int, seed: UInt64, scale: Float = 1) -> Matrix {
    Matrix(rows: rows, columns: columns, values: randomValues(rows * columns, seed: seed, scale: scale))
}

/// Naive f64 reference of `W · x` for each row x.
private func naiveProject(_ x: [Double], rows: Int, inWidth: Int, weight: Matrix) -> [Double] {
    var out = [Double](repeating: 0, count: rows * weight.rows)
    for r in 0..<rows {
        for o in 0..<weight.rows {
            var sum = 0.0
            for c in 0..<inWidth { sum += x[r * inWidth + c] * Double(weight[o, c]) }
            out[r * weight.rows + o] = sum
        }
    }
    return out
}

private func naiveActivation(_ activation: Activation, _ z: Double) -> Double {
    Double(activation(Float(z)))  // the scalar functions are tested separately below
}

private func naiveExpert(_ weights: ExpertWeights, _ x: Matrix) -> [Double] {
    let input = x.values.map(Double.init)
    switch weights {
    case .gated(let gate, let up, let down, let activation):
        let a = naiveProject(input, rows: x.rows, inWidth: x.columns, weight: gate)
        let b = naiveProject(input, rows: x.rows, inWidth: x.columns, weight: up)
        let z = zip(a, b).map { naiveActivation(activation, $0) * $1 }
        return naiveProject(z, rows: x.rows, inWidth: gate.rows, weight: down)
    case .plain(let inWeight, let outWeight, let activation):
        let z = naiveProject(input, rows: x.rows, inWidth: x.columns, weight: inWeight).map {
            naiveActivation(activation, $0)
        }
        return naiveProject(z, rows: x.rows, inWidth: inWeight.rows, weight: outWeight)
    case .clampedSwiGLU(let gate, let up, let down, let gateBias, let upBias, let downBias, let limit, let alpha):
        let i = gate.rows
        let a = naiveProject(input, rows: x.rows, inWidth: x.columns, weight: gate)
        let b = naiveProject(input, rows: x.rows, inWidth: x.columns, weight: up)
        var z = [Double](repeating: 0, count: x.rows * i)
        for index in z.indices {
            let g = min(a[index] + Double(gateBias[index % i]), Double(limit))
            let u = min(max(b[index] + Double(upBias[index % i]), -Double(limit)), Double(limit))
            z[index] = (u + 1) * g / (1 + Double.exp(-Double(alpha) * g))
        }
        var y = naiveProject(z, rows: x.rows, inWidth: i, weight: down)
        for index in y.indices { y[index] += Double(downBias[index % down.rows]) }
        return y
    }
}

/// max |got − want| / max(1, max |want|): relative to the output's scale.
private func relativeError(_ got: [Float], _ want: [Double]) -> Double {
    let scale = max(1e-30, want.map(abs).max() ?? 0)
    return zip(got, want).map { abs(Double($0) - $1) }.max().map { $0 / scale } ?? 0
}

@Suite("CPU expert kernel")
struct ExpertKernelTests {
    static let shapes: [(tokens: Int, hidden: Int, intermediate: Int)] = [
        (1, 8, 16), (7, 32, 48), (16, 64, 176), (33, 128, 96), (256, 64, 128), (3, 1, 5),
    ]

    @Test("gated (SwiGLU/GeGLU) experts match a naive f64 reference", arguments: shapes, [Activation.silu, .gelu])
    func gatedMatchesReference(shape: (tokens: Int, hidden: Int, intermediate: Int), activation: Activation) {
        let (t, h, i) = shape
        let weights = ExpertWeights.gated(
            gate: randomMatrix(i, h, seed: 1, scale: 0.5), up: randomMatrix(i, h, seed: 2, scale: 0.5),
            down: randomMatrix(h, i, seed: 3, scale: 0.5), activation: activation)
        let x = randomMatrix(t, h, seed: 4)
        let y = CPUExpertKernel(weights: weights).forward(x)
        #expect(y.rows == t && y.columns == h)
        #expect(relativeError(y.values, naiveExpert(weights, x)) < 1e-5)
    }

    @Test("plain experts match a naive f64 reference", arguments: shapes, [Activation.relu, .gelu, .geluTanh, .silu])
    func plainMatchesReference(shape: (tokens: Int, hidden: Int, intermediate: Int), activation: Activation) {
        let (t, h, i) = shape
        let weights = ExpertWeights.plain(
            input: randomMatrix(i, h, seed: 5, scale: 0.5), output: randomMatrix(h, i, seed: 6, scale: 0.5),
            activation: activation)
        let x = randomMatrix(t, h, seed: 7)
        let y = CPUExpertKernel(weights: weights).forward(x)
        #expect(relativeError(y.values, naiveExpert(weights, x)) < 1e-5)
    }

    @Test("GPT-OSS clamped SwiGLU experts with biases match a naive f64 reference", arguments: shapes, [Float(7), 0.5])
    func clampedMatchesReference(shape: (tokens: Int, hidden: Int, intermediate: Int), limit: Float) {
        let (t, h, i) = shape
        let weights = ExpertWeights.clampedSwiGLU(
            gate: randomMatrix(i, h, seed: 11, scale: 2), up: randomMatrix(i, h, seed: 12, scale: 2),
            down: randomMatrix(h, i, seed: 13, scale: 0.5), gateBias: randomValues(i, seed: 14, scale: 1),
            upBias: randomValues(i, seed: 15, scale: 1), downBias: randomValues(h, seed: 16, scale: 1),
            limit: limit, alpha: 1.702)
        let x = randomMatrix(t, h, seed: 17)
        #expect(relativeError(CPUExpertKernel(weights: weights).forward(x).values, naiveExpert(weights, x)) < 1e-5)
    }

    /// `matrix` as `precision` stores it, widened back (the weights a quantised kernel computes with).
    private static func stored(_ matrix: Matrix, _ precision: WeightPrecision) throws -> Matrix {
        Matrix(
            rows: matrix.rows, columns: matrix.columns,
            values: try WeightMatrix(
                rows: matrix.rows, columns: matrix.columns, values: matrix.values, precision: precision
            ).dequantized())
    }

    @Test(
        "bf16 and int8 experts of every form match the naive f64 expert over their dequantised weights (≤ 1e-5) and f32 (≤ 2e-2)",
        arguments: [WeightPrecision.bf16, .int8], [1, 3, 40])
    func quantisedFormsMatchReference(precision: WeightPrecision, tokens: Int) throws {
        let (h, i) = (48, 72)
        let (gate, up) = (randomMatrix(i, h, seed: 21, scale: 0.5), randomMatrix(i, h, seed: 22, scale: 0.5))
        let (down, input) = (randomMatrix(h, i, seed: 23, scale: 0.5), randomMatrix(i, h, seed: 24, scale: 0.5))
        let (gateBias, upBias) = (randomValues(i, seed: 25, scale: 1), randomValues(i, seed: 26, scale: 1))
        let downBias = randomValues(h, seed: 27, scale: 1)
        let forms: [(ExpertWeights, ExpertWeights)] = [
            (
                .gated(gate: gate, up: up, down: down, activation: .silu),
                .gated(
                    gate: try Self.stored(gate, precision), up: try Self.stored(up, precision),
                    down: try Self.stored(down, precision), activation: .silu)
            ),
            (
                .plain(input: input, output: down, activation: .gelu),
                .plain(
                    input: try Self.stored(input, precision), output: try Self.stored(down, precision),
                    activation: .gelu)
            ),
            (
                .clampedSwiGLU(
                    gate: gate, up: up, down: down, gateBias: gateBias, upBias: upBias, downBias: downBias,
                    limit: 7, alpha: 1.702),
                .clampedSwiGLU(
                    gate: try Self.stored(gate, precision), up: try Self.stored(up, precision),
                    down: try Self.stored(down, precision), gateBias: gateBias, upBias: upBias, downBias: downBias,
                    limit: 7, alpha: 1.702)
            ),
        ]
        let x = randomMatrix(tokens, h, seed: 28)
        for (weights, dequantised) in forms {
            let kernel = try CPUExpertKernel(weights: weights, precision: precision)
            #expect(kernel.precision == precision)
            let y = kernel.forward(x)
            #expect(relativeError(y.values, naiveExpert(dequantised, x)) < 1e-5)
            #expect(y.relativeError(to: CPUExpertKernel(weights: weights).forward(x)) < 2e-2)
            #expect(
                kernel.residentBytes < CPUExpertKernel(weights: weights).residentBytes * (precision == .int8 ? 3 : 6)
                    / 10)
        }
    }

    @Test("an empty block gives an empty block")
    func emptyBlock() {
        let weights = ExpertWeights.plain(
            input: randomMatrix(4, 3, seed: 1), output: randomMatrix(3, 4, seed: 2), activation: .relu)
        let y = CPUExpertKernel(weights: weights).forward(Matrix(rows: 0, columns: 3, values: []))
        #expect(y.rows == 0 && y.columns == 3)
    }

    @Test(
        "activations match their definitions",
        arguments: [
            (Activation.relu, Float(-1.5), 0.0), (.relu, 2, 2),
            (.silu, 1, 0.7310585786300049), (.silu, -2, -0.2384058440442351),
            (.gelu, 1, 0.8413447460685429), (.gelu, -0.5, -0.15426876936299347),
            (.geluTanh, 1, 0.8411919906082768), (.geluTanh, -0.5, -0.15428599017),
        ])
    func activation(activation: Activation, z: Float, expected: Double) {
        #expect(abs(Double(activation(z)) - expected) < 1e-6)
    }

    @Test("gate logits are X · W_rᵀ")
    func gateProjection() {
        let x = randomMatrix(5, 12, seed: 8), router = randomMatrix(4, 12, seed: 9)
        let logits = BLAS.multiplyTransposed(x, router)
        let reference = naiveProject(x.values.map(Double.init), rows: 5, inWidth: 12, weight: router)
        #expect(logits.rows == 5 && logits.columns == 4)
        #expect(relativeError(logits.values, reference) < 1e-6)
    }

    @Test("mismatched expert weights are reported, naming the projection")
    func shapeProblem() {
        let weights = ExpertWeights.gated(
            gate: randomMatrix(6, 4, seed: 1), up: randomMatrix(6, 4, seed: 2), down: randomMatrix(4, 5, seed: 3),
            activation: .silu)
        #expect(weights.shapeProblem == "down projection: expected [4, 6], got [4, 5]")
    }
}
