import ArgumentParser
import MoECore
import MoEModel

struct Synth: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a random MoE model (Mixtral layout: config.json + model.safetensors).")

    @Option(help: "Experts per layer.") var experts: Int = 8
    @Option(help: "Experts per token.") var topK: Int = 2
    @Option(help: "Hidden size H.") var hidden: Int = 1024
    @Option(help: "Expert intermediate size I.") var intermediate: Int = 2816
    @Option(help: "MoE layers.") var layers: Int = 2
    @Option(help: "Weight dtype: f32, bf16 or f16.") var dtype: DType = .f32
    @Option(help: "Random seed.") var seed: UInt64 = 0
    @Option(help: "Output folder (created).") var out: String

    func validate() throws {
        let shape = ModelSynthesizer.Shape(
            experts: self.experts, topK: self.topK, hiddenSize: self.hidden, intermediateSize: self.intermediate,
            layers: self.layers)
        if let problem = shape.problem { throw ValidationError(problem) }
    }

    func run() async throws {
        let shape = ModelSynthesizer.Shape(
            experts: self.experts, topK: self.topK, hiddenSize: self.hidden, intermediateSize: self.intermediate,
            layers: self.layers)
        let bytes = try ModelSynthesizer(shape: shape, dtype: self.dtype, seed: self.seed).write(to: self.out)
        print(
            "wrote \(self.out): mixtral, \(self.layers) layers × \(self.experts) experts (top-\(self.topK)), "
                + "H=\(self.hidden), I=\(self.intermediate), \(self.dtype), \(bytes >> 20) MiB of weights")
    }
}
