import MoECore
import MoEKernels
import MoEInProcess
import MoEModel
import MoERuntime

/// One MoE layer computed in this process (`InProcessMoE`: gate, dispatch, experts, combine), called back to back:
/// the figure `scripts/bench_numpy_layer.py` sets beside numpy computing the same layer from the same weights.
public enum LayerBenchmark {
    public struct Result: Sendable {
        public let tokens: Int
        public let calls: Int
        public let samples: LatencySamples
    }

    /// Calls `layer` with `tokens` rows for `seconds` (after 3 warm-up calls), each call on the next of 64 fixed
    /// random inputs (rows uniform in ±1.7, as `moemesh bench` sends), so that the chosen experts vary and their
    /// weights come from memory.
    public static func run(
        checkpoint: MoECheckpoint, layer: String, tokens: Int, precision: WeightPrecision, seconds: Double
    ) async throws -> Result {
        let reference = try InProcessMoE(checkpoint: checkpoint, layers: [layer], precision: precision)
        let h = checkpoint.hiddenSize
        let inputs = (0..<64).map { index in
            Matrix(
                rows: tokens, columns: h,
                values: ModelSynthesizer.uniform(count: tokens * h, scale: 1.7, seed: 100 + UInt64(index)))
        }
        for input in inputs.prefix(3) { _ = try await reference.forward(layer: layer, hidden: input) }
        let clock = ContinuousClock()
        let deadline = clock.now + .milliseconds(Int(seconds * 1000))
        var samples = LatencySamples()
        var next = 0
        while clock.now < deadline || samples.count < 10 {
            let input = inputs[next]
            next = (next + 1) % inputs.count
            samples.append(try await clock.measure { _ = try await reference.forward(layer: layer, hidden: input) })
        }
        return Result(tokens: tokens, calls: samples.count, samples: samples)
    }
}
