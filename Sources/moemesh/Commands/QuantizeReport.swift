import ArgumentParser
import MoECore
import MoEModel
import MoEInProcess
import MoERuntime

#if canImport(Glibc)
    import Glibc
#endif

/// `moemesh quantize-report`: the error each expert and layer of a model takes in lower precision.
struct QuantizeReport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize-report",
        abstract:
            "Measure each expert's and each layer's error against f32 when weights are stored as bf16, int8 or fp8.",
        discussion: """
            On --tokens sampled hidden states (standard normal, seeded): for each expert and precision, \
            ‖Y − Y_f32‖ / ‖Y_f32‖ and the bytes of its weights; for each layer, the output error on the same input \
            and, along a residual chain through the layers (h ← h + MoE(h)), the share of tokens whose chosen experts \
            are unchanged. Without --precision: every expert in bf16, then int8, then fp8 (a CUDA precision: its \
            weights, block-scaled e4m3 as the GPU holds them, widened back and multiplied in f32 here).
            """)

    @Option(help: "Model folder (config.json + *.safetensors).") var model: String
    @Option(
        help:
            "A precision plan to measure, as `moemesh expert --precision` takes it (default: bf16, then int8, then fp8)."
    )
    var precision: String?
    @Option(help: "Sampled tokens.") var tokens: Int = 256
    @Option(help: "Seed of the sampled tokens.") var seed: UInt64 = 1
    @Flag(help: "Print every expert's row, not only each layer's and the summary.") var perExpert = false
    @Flag(help: "One JSON object: experts, layers and summary.") var json = false

    func run() async throws {
        guard self.tokens > 0 else { throw ValidationError("--tokens: expected at least 1, got \(self.tokens)") }
        let configurations: [QuantizationReport.Configuration]
        if let text = self.precision {
            switch PrecisionPlan.parse(text) {
            case .success(let plan): configurations = [.init(name: text, plan: plan)]
            case .failure(let error): throw ValidationError("--precision: \(error)")
            }
        } else {
            configurations = [.uniform(.bf16), .uniform(.int8), .uniform(.fp8)]
        }
        let checkpoint = try MoECheckpoint(path: self.model)
        let (json, perExpert) = (self.json, self.perExpert)
        if !json {
            print(
                "model: \(checkpoint.modelType), \(checkpoint.layers.count) MoE layers, \(self.tokens) sampled tokens")
            if perExpert { print("layer  expert  precision   rel. error   MiB (f32 MiB)") }
        }
        let result: QuantizationReport.Result
        do {
            result = try await QuantizationReport.run(
                checkpoint: checkpoint, configurations: configurations, tokens: self.tokens, seed: self.seed
            ) { expert, layer in
                guard !json else { return }
                if let row = expert, perExpert {
                    let name = row.address.isShared ? "shared" : String(row.address.expert)
                    print(
                        pad(row.address.layer, 5) + pad(name, 8) + pad(row.precision.rawValue, 11)
                            + pad(scientific(row.relativeError), 13)
                            + pad("\(mebibytes(row.bytes)) (\(mebibytes(row.f32Bytes)))", 17))
                }
                if let row = layer {
                    print(
                        "layer \(row.layer) \(row.configuration): output rel. error \(scientific(row.relativeError)), "
                            + "routing unchanged for \(DecimalFormat.fixed(100 * row.routingUnchanged, 2))% of tokens")
                }
                fflush(nil)
            }
        } catch {
            throw ValidationError("\(error)")
        }
        let summaries = configurations.map { configuration in
            Summary(configuration: configuration, result: result)
        }
        if json {
            print(Self.json(result, summaries))
            return
        }
        for summary in summaries {
            print(
                "\(summary.name): experts worst \(scientific(summary.worstExpert)), mean \(scientific(summary.meanExpert)); "
                    + "layers worst \(scientific(summary.worstLayer)); routing unchanged ≥ "
                    + "\(DecimalFormat.fixed(100 * summary.leastRoutingUnchanged, 2))%; weights "
                    + "\(DecimalFormat.fixed(summary.bytesRatio, 3))× f32")
        }
    }

    struct Summary {
        let name: String
        let worstExpert: Double
        let meanExpert: Double
        let worstLayer: Double
        let leastRoutingUnchanged: Double
        let bytesRatio: Double

        init(configuration: QuantizationReport.Configuration, result: QuantizationReport.Result) {
            let experts = result.experts.filter {
                (configuration.plan.precision(of: $0.address) ?? .f32) == $0.precision
            }
            let layerRows = result.layers.filter { $0.configuration == configuration.name }
            self.name = configuration.name
            self.worstExpert = experts.map(\.relativeError).max() ?? 0
            self.meanExpert = experts.map(\.relativeError).reduce(0, +) / Double(max(1, experts.count))
            self.worstLayer = layerRows.map(\.relativeError).max() ?? 0
            self.leastRoutingUnchanged = layerRows.map(\.routingUnchanged).min() ?? 1
            self.bytesRatio =
                Double(experts.map(\.bytes).reduce(0, +)) / Double(max(1, experts.map(\.f32Bytes).reduce(0, +)))
        }
    }

    static func json(_ result: QuantizationReport.Result, _ summaries: [Summary]) -> String {
        let experts = result.experts.map {
            #"{"layer": "\#($0.address.layer)", "expert": \#($0.address.expert), "precision": "\#($0.precision)", "#
                + #""relative_error": \#($0.relativeError), "bytes": \#($0.bytes), "f32_bytes": \#($0.f32Bytes)}"#
        }
        let layers = result.layers.map {
            #"{"layer": "\#($0.layer)", "configuration": "\#($0.configuration)", "#
                + #""relative_error": \#($0.relativeError), "routing_unchanged": \#($0.routingUnchanged)}"#
        }
        let summary = summaries.map {
            #"{"configuration": "\#($0.name)", "worst_expert": \#($0.worstExpert), "mean_expert": \#($0.meanExpert), "#
                + #""worst_layer": \#($0.worstLayer), "least_routing_unchanged": \#($0.leastRoutingUnchanged), "#
                + #""bytes_ratio": \#($0.bytesRatio)}"#
        }
        return #"{"experts": [\#(experts.joined(separator: ", "))], "layers": [\#(layers.joined(separator: ", "))], "#
            + #""summary": [\#(summary.joined(separator: ", "))]}"#
    }
}

private func pad(_ text: String, _ width: Int) -> String {
    String(repeating: " ", count: max(0, width - text.count)) + text
}

private func scientific(_ value: Double) -> String { String(format: "%.2e", value) }

private func mebibytes(_ bytes: Int) -> String { DecimalFormat.fixed(Double(bytes) / 1_048_576, 2) }
