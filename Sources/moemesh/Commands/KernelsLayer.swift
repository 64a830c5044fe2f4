import ArgumentParser
import MoEBench
import MoECore
import MoEKernels
import MoEModel

/// `moemesh kernels layer`: one MoE layer in this process, back to back.
struct KernelsLayer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "layer",
        abstract: "Time one MoE layer of a model folder computed in this process (gate, experts, combine).",
        discussion: """
            The in-process reference the mesh is measured against, alone: calls back to back over --seconds, each \
            on the next of 64 fixed random inputs so that the chosen experts vary. Prints p50, p90 and the mean \
            per call. scripts/bench_numpy_layer.py runs this beside numpy computing the same layer from the same \
            weights and prints the ratio.
            """)

    @Option(help: "The model folder (config.json and safetensors).") var model: String
    @Option(help: "The layer (default: the first).") var layer: String?
    @Option(help: "Token rows per call.") var tokens: Int = 1
    @Option(help: "How the experts' weights are stored: f32, bf16 or int8.") var precision: WeightPrecision = .f32
    @Option(help: "Seconds of timed calls.") var seconds: Double = 3
    @Option(help: "Threads (default: one per core).") var threads: Int?
    @Flag(help: "Print one JSON object.") var json = false

    func run() async throws {
        guard self.tokens > 0, self.seconds > 0 else {
            throw ValidationError(
                "--tokens and --seconds: expected positive values, got \(self.tokens), \(self.seconds)")
        }
        let checkpoint = try MoECheckpoint(path: self.model)
        guard let layer = self.layer ?? checkpoint.layers.first?.name else {
            throw ValidationError("--model \(self.model): the model has no MoE layer")
        }
        if let threads = self.threads { BLAS.threadCount = threads }
        let result = try await LayerBenchmark.run(
            checkpoint: checkpoint, layer: layer, tokens: self.tokens, precision: self.precision,
            seconds: self.seconds)
        let (p50, p90) = (result.samples.p50, result.samples.quantile(0.9))
        let mean = result.samples.total / Double(max(1, result.calls))
        if self.json {
            print(
                #"{"layer": "\#(layer)", "tokens": \#(self.tokens), "precision": "\#(self.precision)", "#
                    + #""threads": \#(BLAS.threadCount), "calls": \#(result.calls), "#
                    + #""p50_us": \#(DecimalFormat.fixed(p50, 1)), "p90_us": \#(DecimalFormat.fixed(p90, 1)), "#
                    + #""mean_us": \#(DecimalFormat.fixed(mean, 1))}"#)
        } else {
            print("\(CPUExpertBackend().summary), \(BLAS.threadCount) threads")
            print(
                "layer \(layer), T = \(self.tokens), \(self.precision): \(result.calls) calls, p50 "
                    + "\(DecimalFormat.fixed(p50, 1)) µs, p90 \(DecimalFormat.fixed(p90, 1)) µs, mean "
                    + "\(DecimalFormat.fixed(mean, 1)) µs")
        }
    }
}
