import MoETestSupport
import MoECore
import MoEKernels
import MoEInProcess
import MoERuntime
import Testing

@testable import MoEModel

@Suite("model folders and the Mixtral adapter")
struct ModelFolderTests {
    static let shape = ModelSynthesizer.Shape(experts: 4, topK: 2, hiddenSize: 16, intermediateSize: 24, layers: 2)

    @Test("a synthesised model loads with its layers, gates and experts", arguments: DType.allCases)
    func synthesisedModelLoads(dtype: DType) throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        try ModelSynthesizer(shape: Self.shape, dtype: dtype, seed: 3).write(to: directory.path)
        let checkpoint = try MoECheckpoint(path: directory.path)
        #expect(checkpoint.modelType == "mixtral")
        #expect(checkpoint.layers.map(\.name) == ["0", "1"])
        let layer = try checkpoint.layer("1")
        #expect(layer.numExperts == 4 && layer.topK == 2 && layer.gate.renormalize)
        let gate = try checkpoint.gateWeight(layer: layer)
        #expect(gate.rows == 4 && gate.columns == 16)
        guard case .gated(let w1, let w3, let w2, .silu) = try checkpoint.expertWeights(layer: layer, expert: 3) else {
            Issue.record("expected a SwiGLU expert")
            return
        }
        #expect([w1.rows, w1.columns, w3.rows, w3.columns, w2.rows, w2.columns] == [24, 16, 24, 16, 16, 24])
        #expect(w1.values.contains { $0 != 0 })
        #expect(throws: ModelError.unknownExpert(layer: "1", expert: 4, numExperts: 4)) {
            try checkpoint.expertWeights(layer: layer, expert: 4)
        }
        #expect(throws: ModelError.unknownLayer(layer: "2", known: ["0", "1"])) { try checkpoint.layer("2") }
    }

    @Test("a sharded checkpoint reads through model.safetensors.index.json")
    func sharded() throws {
        let whole = TemporaryDirectory(), sharded = TemporaryDirectory()
        defer { whole.remove(); sharded.remove() }
        try ModelSynthesizer(shape: Self.shape, seed: 5).write(to: whole.path)
        // Split the single file into two shards and an index.
        let source = try SafeTensorsFile(path: whole.file("model.safetensors"))
        let names = source.entries.keys.sorted()
        var weightMap: [String] = []
        for (index, part) in [names.filter { $0.contains("layers.0.") }, names.filter { !$0.contains("layers.0.") }]
            .enumerated()
        {
            let fileName = "model-0000\(index + 1)-of-00002.safetensors"
            try SafeTensorsWriter.write(
                part.map { SafeTensorsWriter.Entry(name: $0, tensor: try! source.tensor($0)) },
                to: sharded.file(fileName))
            weightMap += part.map { "\"\($0)\": \"\(fileName)\"" }
        }
        try FileSystem.writeFile(
            sharded.file("model.safetensors.index.json"),
            chunks: [Array("{\"metadata\": {}, \"weight_map\": {\(weightMap.joined(separator: ", "))}}".utf8)])
        try FileSystem.writeFile(
            sharded.file("config.json"), chunks: [try FileSystem.readFile(whole.file("config.json"))])

        let a = try MoECheckpoint(path: whole.path), b = try MoECheckpoint(path: sharded.path)
        for layer in a.layers {
            #expect(try a.gateWeight(layer: layer) == b.gateWeight(layer: layer))
            for expert in 0..<layer.numExperts {
                #expect(
                    try a.expertWeights(layer: layer, expert: expert) == b.expertWeights(layer: layer, expert: expert))
            }
        }
    }

    @Test(
        "an index may only name shard files inside the model folder",
        arguments: ["../model.safetensors", "/etc/passwd", "..", "shards/model.safetensors"])
    func indexStaysInTheFolder(shard: String) throws {
        let json = "{\"weight_map\": {\"model.layers.0.mlp.gate.weight\": \"\(shard)\"}}"
        #expect(throws: ModelError.self) {
            try SafeTensorsIndex(parsing: Array(json.utf8), path: "index.json")
        }
        do { _ = try SafeTensorsIndex(parsing: Array(json.utf8), path: "index.json") } catch {
            #expect("\(error)".contains("expected a file name inside the model folder"))
        }
        let plain = "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\"}}"
        #expect(try SafeTensorsIndex(parsing: Array(plain.utf8), path: "index.json").weightMap.count == 1)
    }

    @Test("a missing expert tensor is named in the error")
    func missingTensor() throws {
        let whole = TemporaryDirectory(), broken = TemporaryDirectory()
        defer { whole.remove(); broken.remove() }
        try ModelSynthesizer(shape: Self.shape).write(to: whole.path)
        let source = try SafeTensorsFile(path: whole.file("model.safetensors"))
        let missing = "model.layers.1.block_sparse_moe.experts.2.w3.weight"
        try SafeTensorsWriter.write(
            source.entries.keys.sorted().filter { $0 != missing }.map {
                .init(name: $0, tensor: try! source.tensor($0))
            },
            to: broken.file("model.safetensors"))
        try FileSystem.writeFile(
            broken.file("config.json"), chunks: [try FileSystem.readFile(whole.file("config.json"))])
        let checkpoint = try MoECheckpoint(path: broken.path)
        #expect(throws: ModelError.missingTensor(name: missing, folder: broken.path)) {
            try checkpoint.expertWeights(layer: checkpoint.layer("1"), expert: 2)
        }
    }

    /// Found by FuzzModelConfig (4·10⁶ layers took 12 s to describe; 10¹² would exhaust memory), and the two
    /// neighbours it pointed at: a negative layer count (a trapping range) and a shared size that overflows.
    @Test(
        "sizes in config.json are bounded before anything is allocated for them",
        arguments: [
            (
                #"{"model_type": "mixtral", "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 4e6}"#,
                "'num_hidden_layers' must be positive and at most 4096, got 4000000"
            ),
            (
                #"{"model_type": "switch_transformers", "d_model": 8, "d_ff": 16, "num_experts": 4, "num_layers": -1}"#,
                "'num_layers' must be at least 0 and at most 4096, got -1"
            ),
            (
                #"{"model_type": "deepseek_v3", "hidden_size": 8, "moe_intermediate_size": 16, "n_routed_experts": 4, "num_experts_per_tok": 2, "num_hidden_layers": 2, "n_group": 1, "topk_group": 1, "n_shared_experts": 100000000000000}"#,
                "'n_shared_experts' must be at least 0 and at most 65536, got 100000000000000"
            ),
        ])
    func boundedSizes(json: String, reason: String) throws {
        let config = try ModelConfig(parsing: Array(json.utf8), path: "config.json")
        #expect(throws: ModelError.invalidConfig(path: "config.json", reason: reason)) {
            try Architectures.resolve(config)
        }
    }

    /// Found by FuzzModelConfig (Fuzz/Regressions/FuzzModelConfig/huge-mlp-only-layer): an integer list entry no Int
    /// holds trapped the conversion.
    @Test("a list of layer indices with a number no integer holds, or a fraction, is refused naming the entry")
    func integerLists() throws {
        for (entry, shown) in [("1.8e49", "1.8e+49"), ("2.5", "2.5")] {
            let json =
                #"{"model_type": "qwen2_moe", "hidden_size": 16, "intermediate_size": 40, "moe_intermediate_size": 12, "#
                + #""num_experts": 4, "num_experts_per_tok": 2, "num_hidden_layers": 2, "mlp_only_layers": [0, "#
                + entry + "]}"
            let config = try ModelConfig(parsing: Array(json.utf8), path: "config.json")
            #expect(
                throws: ModelError.invalidConfig(
                    path: "config.json",
                    reason: "'mlp_only_layers' must be an array of integers, got \(shown) at position 1")
            ) {
                try Architectures.resolve(config)
            }
        }
    }

    @Test("an unknown model_type, a bad config and a folder without weights are refused clearly")
    func badFolders() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        #expect(throws: ModelError.notAModelFolder(path: directory.path, reason: "config.json is missing")) {
            try MoECheckpoint(path: directory.path)
        }
        try FileSystem.writeFile(
            directory.file("config.json"),
            chunks: [Array(#"{"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1}"#.utf8)])
        #expect(throws: ModelError.notAModelFolder(path: directory.path, reason: "no *.safetensors file")) {
            try MoECheckpoint(path: directory.path)
        }
        try SafeTensorsWriter.write(
            [.init(name: "x", tensor: try Tensor(shape: [1], floats: [0]))], to: directory.file("model.safetensors"))
        do {
            _ = try MoECheckpoint(path: directory.path)
            Issue.record("llama accepted")
        } catch {
            let supported = [
                "mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "gpt_oss",
                "switch_transformers",
            ]
            #expect(error == .unsupportedArchitecture(modelType: "llama", supported: supported))
            #expect(
                error.description
                    == "model_type 'llama' is not supported; supported: \(supported.joined(separator: ", "))")
        }
        try FileSystem.writeFile(
            directory.file("config.json"), chunks: [Array(#"{"model_type": "mixtral", "num_hidden_layers": 1}"#.utf8)])
        #expect(
            throws: ModelError.invalidConfig(
                path: directory.file("config.json"), reason: "required key 'hidden_size' is missing")
        ) {
            try MoECheckpoint(path: directory.path)
        }
    }

    @Test("the in-process reference equals a naive layer computed from the weights")
    func inProcessReference() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        try ModelSynthesizer(shape: Self.shape, seed: 9).write(to: directory.path)
        let checkpoint = try MoECheckpoint(path: directory.path)
        let reference = try InProcessMoE(checkpoint: checkpoint)
        let tokens = 5
        let hidden = Matrix(
            rows: tokens, columns: 16, values: ModelSynthesizer.uniform(count: tokens * 16, scale: 1, seed: 1))
        let result = try await reference.forward(layer: "0", hidden: hidden)
        let layer = try checkpoint.layer("0")
        let logits = BLAS.multiplyTransposed(hidden, try checkpoint.gateWeight(layer: layer))
        let decision = layer.gate.route(logits: logits)
        // The gate sums in its own fixed order (GateProjection), BLAS in another: same ids, weights within 1e-6.
        #expect(result.routing.topkIDs == decision.topkIDs)
        for (got, want) in zip(result.routing.topkWeights, decision.topkWeights) { #expect(abs(got - want) <= 1e-6) }
        for token in 0..<tokens {
            var expected = [Float](repeating: 0, count: 16)
            for slot in 0..<2 {
                let expert = Int(decision.topkIDs[token * 2 + slot])
                let kernel = CPUExpertKernel(weights: try checkpoint.expertWeights(layer: layer, expert: expert))
                let y = kernel.forward(Matrix(rows: 1, columns: 16, values: Array(hidden.row(token))))
                for c in 0..<16 { expected[c] += decision.topkWeights[token * 2 + slot] * y.values[c] }
            }
            for c in 0..<16 { #expect(abs(result.output[token, c] - expected[c]) <= 1e-5 * max(1, abs(expected[c]))) }
        }
    }
}
