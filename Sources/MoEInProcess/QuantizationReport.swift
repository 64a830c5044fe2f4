import MoECore
import MoEKernels
import MoEModel
import MoERuntime

/// How much each expert and each layer of a checkpoint moves when its weights are stored in lower precision, on
/// sampled hidden states (`moemesh quantize-report`).
///
/// Rows: `T` tokens of standard normal values (the scale of a normalised hidden state), seeded. Per expert and
/// precision: `‖FFN_p(X) − FFN_f32(X)‖ / ‖FFN_f32(X)‖` on the same rows. Per layer and configuration: the layer's
/// output error on the same input, and, along a residual chain through the layers (`h ← h + MoE(h)`, the same for
/// both), the fraction of tokens whose set of chosen experts is unchanged.
public enum QuantizationReport {
    /// One configuration to measure: every expert in one precision, or a per-expert plan.
    public struct Configuration: Sendable {
        public let name: String
        public let plan: PrecisionPlan

        public init(name: String, plan: PrecisionPlan) {
            self.name = name
            self.plan = plan
        }

        /// Every expert in `precision`.
        public static func uniform(_ precision: WeightPrecision) -> Configuration {
            Configuration(name: precision.rawValue, plan: (try? PrecisionPlan.parse(precision.rawValue).get())!)
        }
    }

    public struct ExpertRow: Sendable, Equatable {
        public let address: ExpertAddress
        public let precision: WeightPrecision
        public let relativeError: Double
        public let bytes: Int
        public let f32Bytes: Int
    }

    public struct LayerRow: Sendable, Equatable {
        public let layer: String
        public let configuration: String
        /// The layer's output error on the f32 chain's input.
        public let relativeError: Double
        /// Tokens whose chosen experts are the same as with f32 weights, along the chain.
        public let routingUnchanged: Double
        public let tokens: Int
    }

    public struct Result: Sendable {
        public let experts: [ExpertRow]
        public let layers: [LayerRow]
    }

    /// Measures `configurations` on `tokens` sampled rows (seed `seed`), layer by layer (one layer's experts in
    /// memory at a time), reporting each row as it is measured.
    public static func run(
        checkpoint: MoECheckpoint, configurations: [Configuration], tokens: Int, seed: UInt64 = 1,
        report: (ExpertRow?, LayerRow?) -> Void = { _, _ in }
    ) async throws -> Result {
        let layers = checkpoint.layers
        let start = Matrix(
            rows: tokens, columns: checkpoint.hiddenSize,
            values: Self.standardNormal(count: tokens * checkpoint.hiddenSize, seed: seed))
        var reference = start
        var chains = [Matrix](repeating: start, count: configurations.count)
        var expertRows: [ExpertRow] = []
        var layerRows: [LayerRow] = []
        for spec in layers {
            let pipeline = try MoELayerPipeline(checkpoint: checkpoint, layer: spec)
            var f32: [ExpertAddress: CPUExpertKernel] = [:]
            var stored: [[ExpertAddress: CPUExpertKernel]] = Array(repeating: [:], count: configurations.count)
            var measured = Set<String>()
            for address in spec.expertAddresses {
                let weights = try checkpoint.expertWeights(layer: spec, expert: address.expert)
                let exact = CPUExpertKernel(weights: weights)
                let expected = exact.forward(reference)
                f32[address] = exact
                for (index, configuration) in configurations.enumerated() {
                    let precision = configuration.plan.precision(of: address) ?? .f32
                    let (kernel, bytes) = try Self.kernel(weights, precision: precision)
                    stored[index][address] = kernel
                    guard measured.insert("\(address) \(precision)").inserted else { continue }
                    let row = ExpertRow(
                        address: address, precision: precision,
                        relativeError: kernel.forward(reference).relativeError(to: expected),
                        bytes: bytes, f32Bytes: exact.residentBytes)
                    expertRows.append(row)
                    report(row, nil)
                }
            }
            let exactExecutor = LocalExpertExecutor(kernels: f32)
            let exactResult = try await pipeline.forward(reference, executor: exactExecutor)
            for (index, configuration) in configurations.enumerated() {
                let executor = LocalExpertExecutor(kernels: stored[index])
                let sameInput = try await pipeline.forward(reference, executor: executor)
                let chained =
                    chains[index] == reference
                    ? sameInput : try await pipeline.forward(chains[index], executor: executor)
                let row = LayerRow(
                    layer: spec.name, configuration: configuration.name,
                    relativeError: sameInput.output.relativeError(to: exactResult.output),
                    routingUnchanged: Self.sameExperts(chained.routing, exactResult.routing), tokens: tokens)
                layerRows.append(row)
                report(nil, row)
                chains[index] = Self.add(chains[index], chained.output)
            }
            reference = Self.add(reference, exactResult.output)
        }
        return Result(experts: expertRows, layers: layerRows)
    }

    /// A CPU kernel computing as `precision`'s weights do, and the bytes they hold. fp8 runs on CUDA devices only:
    /// here its weights as the GPU holds them (block-scaled e4m3, `ExpertWeights.roundTripped(through:)`) are widened
    /// back and multiplied in f32, so the figure is the weights' error (the GPU's bf16 activations add bf16's).
    static func kernel(_ weights: ExpertWeights, precision: WeightPrecision) throws -> (CPUExpertKernel, Int) {
        guard precision == .fp8 else {
            let kernel = try CPUExpertKernel(weights: weights, precision: precision)
            return (kernel, kernel.residentBytes)
        }
        return (CPUExpertKernel(weights: try weights.roundTripped(through: .fp8)), weights.blockQuantizedBytes(.fp8))
    }

    /// The fraction of tokens whose set of chosen experts is the same in `a` and `b`.
    static func sameExperts(_ a: RoutingDecision, _ b: RoutingDecision) -> Double {
        guard a.tokenCount > 0 else { return 1 }
        var same = 0
        for token in 0..<a.tokenCount {
            let chosen = { (decision: RoutingDecision) in
                Set(decision.topkIDs[(token * decision.topK)..<((token + 1) * decision.topK)].filter { $0 >= 0 })
            }
            if chosen(a) == chosen(b) { same += 1 }
        }
        return Double(same) / Double(a.tokenCount)
    }

    private static func add(_ a: Matrix, _ b: Matrix) -> Matrix {
        Matrix(rows: a.rows, columns: a.columns, values: zip(a.values, b.values).map { $0 + $1 })
    }

    /// Standard normal values (Box–Muller on SplitMix64), seeded.
    static func standardNormal(count: Int, seed: UInt64) -> [Float] {
        (0..<count).map { SplitMix64.gaussian(seed: seed, token: $0, expert: 0) }
    }
}
