import MoECore
import MoEKernels
import MoEModel

/// One SwiGLU expert's forward pass on the CPU in each weight precision, against f32 in the same run: time per call
/// (best of the runs, after a warm-up), the bytes the weights hold, and the output's relative error against f32.
public enum PrecisionBenchmark {
    public struct Row: Sendable {
        public let precision: WeightPrecision
        public let tokens: Int
        /// Best time of one forward pass, in microseconds.
        public let microseconds: Double
        /// f32's time over this one (> 1: faster than f32).
        public let speedup: Double
        public let weightBytes: Int
        /// `‖Y − Y_f32‖ / ‖Y_f32‖`.
        public let relativeError: Double
    }

    /// Times `precisions` for each token count, f32 first (the baseline). Weights: uniform in ±1/√H and ±1/√I
    /// (a trained layer's scale), rows uniform in ±1. With `experts` > 1, successive calls go to successive experts
    /// (as a layer's tokens do), so that weights come from memory rather than a cache that holds one expert.
    public static func run(
        hidden: Int, intermediate: Int, tokens: [Int], precisions: [WeightPrecision], experts: Int = 1,
        seconds: Double, report: (Row) -> Void
    ) throws -> [Row] {
        let h = hidden
        let weights = (0..<UInt64(max(1, experts))).map { expert in
            let (gate, up, down) = Self.randomSwiGLU(hidden: hidden, intermediate: intermediate, seed: 11 + 3 * expert)
            return ExpertWeights.gated(gate: gate, up: up, down: down, activation: .silu)
        }
        let kernelSets = try ([WeightPrecision.f32] + precisions.filter { $0 != .f32 }).map { precision in
            try weights.map { try CPUExpertKernel(weights: $0, precision: precision) }
        }
        var rows: [Row] = []
        for count in tokens {
            let x = Matrix(
                rows: count, columns: h, values: ModelSynthesizer.uniform(count: count * h, scale: 1, seed: 14))
            let reference = kernelSets[0][0].forward(x)
            var baseline = 0.0
            for kernels in kernelSets {
                let output = kernels[0].forward(x)
                var next = 0
                let time = Self.bestMicroseconds(seconds: seconds) {
                    _ = kernels[next].forward(x)
                    next = (next + 1) % kernels.count
                }
                if kernels[0].precision == .f32 { baseline = time }
                let row = Row(
                    precision: kernels[0].precision, tokens: count, microseconds: time, speedup: baseline / time,
                    weightBytes: kernels[0].residentBytes, relativeError: output.relativeError(to: reference))
                report(row)
                rows.append(row)
            }
        }
        return rows
    }

    /// A SwiGLU expert's weights at a trained layer's scale: gate and up `[I, H]` uniform in ±1/√H, down `[H, I]`
    /// in ±1/√I, from seeds `seed`, `seed + 1`, `seed + 2`.
    static func randomSwiGLU(hidden h: Int, intermediate i: Int, seed: UInt64) -> (
        gate: Matrix, up: Matrix, down: Matrix
    ) {
        func matrix(_ rows: Int, _ columns: Int, _ seed: UInt64) -> Matrix {
            Matrix(
                rows: rows, columns: columns,
                values: ModelSynthesizer.uniform(
                    count: rows * columns, scale: 1 / Float(columns).squareRoot(), seed: seed))
        }
        return (matrix(i, h, seed), matrix(i, h, seed + 1), matrix(h, i, seed + 2))
    }

    /// The best time of `body` over `seconds` (at least 5 runs), after one warm-up run.
    static func bestMicroseconds(seconds: Double, _ body: () -> Void) -> Double {
        let clock = ContinuousClock()
        body()
        var best = Double.infinity
        let deadline = clock.now + .milliseconds(Int(seconds * 1000))
        var runs = 0
        while clock.now < deadline || runs < 5 {
            let (s, atto) = clock.measure(body).components
            best = min(best, Double(s) * 1e6 + Double(atto) / 1e12)
            runs += 1
        }
        return best
    }
}
