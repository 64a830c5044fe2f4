import MoECore
import MoEKernels
import MoEModel

#if canImport(Glibc)
    import Glibc
#endif

/// How fast a SwiGLU expert streams its weights at decode sizes, per precision, against OpenBLAS `sgemv` on the same
/// f32 weights (a matrix-vector product reads each weight once: the memory's speed as BLAS reaches it), and where the
/// direct kernels stop paying against `sgemm`.
///
/// Weights come from memory, not cache: calls go to `experts` distinct experts in turn. The four measurements of a
/// row (`sgemv`, the forward pass, the products on each kernel) take turns call by call, so that a neighbour's
/// load on a shared machine falls on all of them alike; each figure is the median of its calls. Weight GB/s = the
/// bytes an expert's weights hold ÷ the time of its forward pass.
public enum DecodeKernelBenchmark {
    /// One precision at one row count.
    public struct Row: Sendable {
        public let precision: WeightPrecision
        public let tokens: Int
        /// `sgemv` over the expert's three f32 projections (gate and up stacked, then down) for one row.
        public let sgemvMicroseconds: Double
        public let sgemvGigabytesPerSecond: Double
        /// The expert's forward pass as served (the product kernel `WeightMatrix.multiply` picks).
        public let ffnMicroseconds: Double
        /// Weight bytes ÷ `ffnMicroseconds`.
        public let weightGigabytesPerSecond: Double
        /// The three products alone on the direct kernels and on `sgemm`.
        public let directMicroseconds: Double
        public let sgemmMicroseconds: Double
        /// The kernel `WeightMatrix.multiply` uses at this row count.
        public let served: WeightMatrix.ProductKernel

        /// The quicker of the two product kernels here.
        public var quicker: WeightMatrix.ProductKernel {
            self.directMicroseconds <= self.sgemmMicroseconds ? .direct : .sgemm
        }
    }

    /// The largest row count up to which the direct kernels were the quicker at every measured count, per
    /// precision (nil: `sgemm` was quicker already at the smallest).
    public static func crossover(_ rows: [Row], _ precision: WeightPrecision) -> Int? {
        var last: Int?
        for row in rows.filter({ $0.precision == precision }).sorted(by: { $0.tokens < $1.tokens }) {
            guard row.quicker == .direct else { break }
            last = row.tokens
        }
        return last
    }

    /// Times `precisions` at each row count; `report` sees each row as it comes.
    public static func run(
        hidden: Int, intermediate: Int, tokens: [Int], precisions: [WeightPrecision], experts: Int, seconds: Double,
        report: (Row) -> Void
    ) throws -> [Row] {
        let (h, i) = (hidden, intermediate)
        let weights = (0..<UInt64(max(1, experts))).map { expert in
            PrecisionBenchmark.randomSwiGLU(hidden: h, intermediate: i, seed: 31 + 3 * expert)
        }
        let f32Experts = weights.map { (gateUp: $0.gate.values + $0.up.values, down: $0.down.values) }
        let largest = tokens.max() ?? 1
        let x = ModelSynthesizer.uniform(count: largest * h, scale: 1, seed: 34)
        let z = ModelSynthesizer.uniform(count: largest * i, scale: 1, seed: 35)
        var gateUpOut = [Float](repeating: 0, count: largest * 2 * i)
        var downOut = [Float](repeating: 0, count: largest * h)
        let f32Bytes = Double(3 * h * i * MemoryLayout<Float>.size)

        var rows: [Row] = []
        for precision in precisions {
            let experts = try weights.map { expert in
                (
                    kernel: try CPUExpertKernel(
                        weights: .gated(gate: expert.gate, up: expert.up, down: expert.down, activation: .silu),
                        precision: precision),
                    gateUp: try WeightMatrix(stacking: [expert.gate, expert.up], precision: precision),
                    down: try WeightMatrix(stacking: [expert.down], precision: precision)
                )
            }
            for count in tokens {
                let input = Matrix(rows: count, columns: h, values: Array(x[0..<(count * h)]))
                func products(_ expert: Int, _ kernel: WeightMatrix.ProductKernel) {
                    x.withUnsafeBufferPointer { x in
                        gateUpOut.withUnsafeMutableBufferPointer { y in
                            experts[expert].gateUp.multiply(
                                x.baseAddress!, rows: count, into: y.baseAddress!, kernel: kernel)
                        }
                    }
                    z.withUnsafeBufferPointer { z in
                        downOut.withUnsafeMutableBufferPointer { y in
                            experts[expert].down.multiply(
                                z.baseAddress!, rows: count, into: y.baseAddress!, kernel: kernel)
                        }
                    }
                }
                func sgemv(_ expert: Int) {
                    f32Experts[expert].gateUp.withUnsafeBufferPointer { w in
                        gateUpOut.withUnsafeMutableBufferPointer { y in
                            BLAS.multiplyVector(x, w.baseAddress!, into: y.baseAddress!, n: 2 * i, k: h)
                        }
                    }
                    f32Experts[expert].down.withUnsafeBufferPointer { w in
                        downOut.withUnsafeMutableBufferPointer { y in
                            BLAS.multiplyVector(z, w.baseAddress!, into: y.baseAddress!, n: h, k: i)
                        }
                    }
                }
                // OpenBLAS last: the direct products, the forward pass (OpenBLAS only beyond the direct limit), sgemv,
                // sgemm.
                let medians = Self.interleavedMedians(
                    seconds: seconds, experts: experts.count,
                    [
                        { products($0, .direct) }, { _ = experts[$0].kernel.forward(input) }, { sgemv($0) },
                        { products($0, .sgemm) },
                    ])
                let row = Row(
                    precision: precision, tokens: count, sgemvMicroseconds: medians[2],
                    sgemvGigabytesPerSecond: f32Bytes / medians[2] / 1e3, ffnMicroseconds: medians[1],
                    weightGigabytesPerSecond: Double(experts[0].kernel.residentBytes) / medians[1] / 1e3,
                    directMicroseconds: medians[0], sgemmMicroseconds: medians[3],
                    served: count <= WeightMatrix.directRowLimit ? .direct : .sgemm)
                report(row)
                rows.append(row)
            }
        }
        return rows
    }

    /// Rounds of blocks: each body called back to back for its share of `seconds` (at least 3 calls; the first
    /// quarter of a block warms up: threads woken, clocks raised), each call on the next expert (so that no call finds its weights in cache); 0.25 s of rest after
    /// each round. OpenBLAS's worker threads spin for a while after each call (OPENBLAS_THREAD_TIMEOUT, ~0.1 s) and
    /// would take a core from a body of other threads that ran next: bodies that call OpenBLAS go last in a round.
    /// The median µs of each body's calls.
    static func interleavedMedians(
        seconds: Double, experts: Int, rounds: Int = 4, _ bodies: [(Int) -> Void]
    ) -> [Double] {
        let clock = ContinuousClock()
        var samples = Array(repeating: LatencySamples(), count: bodies.count)
        let block = Duration.milliseconds(Int(seconds * 1000 / Double(rounds * bodies.count)))
        var next = 0
        for _ in 0..<rounds {
            for (index, body) in bodies.enumerated() {
                let start = clock.now
                let measuredFrom = start + block / 4, end = start + block
                var calls = 0
                while clock.now < end || calls < 3 {
                    let expert = next
                    next = (next + 1) % experts
                    let began = clock.now
                    body(expert)
                    if calls > 0 && began >= measuredFrom { samples[index].append(clock.now - began) }
                    calls += 1
                }
            }
            usleep(250_000)
        }
        return samples.map(\.p50)
    }
}
