import MoECore
import MoEModel
import MoETestSupport
import Testing

/// e4m3fn decoded by its integer form: normal `(8 + m) · 2^(e − 10)`, subnormal `m · 2^−9` (independent of the
/// formula under test).
private func naiveE4M3(_ bits: UInt8) -> Float {
    let sign: Float = bits >= 0x80 ? -1 : 1
    let e = Int((bits >> 3) & 0xF), m = Int(bits & 7)
    if e == 0 { return sign * Float(m) / 512 }
    var scale: Float = 1
    for _ in 0..<abs(e - 10) { scale *= 2 }
    return sign * Float(8 + m) * (e >= 10 ? scale : 1 / scale)
}

@Suite("fp8 checkpoints with block scales (DeepSeek-V3's layout)")
struct BlockScaledFP8Tests {
    @Test("every e4m3fn value decodes as the format defines it; 0x7F and 0xFF are NaN")
    func e4m3Table() {
        for bits in 0..<256 where bits & 0x7F != 0x7F {
            #expect(BlockScaledFP8.e4m3Values[bits] == naiveE4M3(UInt8(bits)), "0x\(String(bits, radix: 16))")
        }
        #expect(BlockScaledFP8.e4m3Values[0x7F].isNaN && BlockScaledFP8.e4m3Values[0xFF].isNaN)
        #expect(BlockScaledFP8.e4m3Values[0x7E] == 448 && BlockScaledFP8.e4m3Values[0x01] == 1.0 / 512)
    }

    /// The small Mixtral model with its expert weights replaced by random fp8 bytes and block scales
    /// (`weight_block_size` [16, 16]); returns the folder and the expected f32 weights by name.
    private func fp8Model(dropScalesOf dropped: String? = nil) throws -> (SmallModel, [String: [Float]]) {
        let model = try SmallModel(
            shape: .init(experts: 2, topK: 1, hiddenSize: 40, intermediateSize: 24, layers: 1))
        let source = try SafeTensorsFile(path: model.directory.file("model.safetensors"))
        var entries: [SafeTensorsWriter.Entry] = []
        var expected: [String: [Float]] = [:]
        var state: UInt64 = 9
        for name in source.entries.keys.sorted() {
            let entry = source.entries[name]!
            guard name.contains(".experts."), entry.shape.count == 2 else {
                entries.append(SafeTensorsWriter.Entry(name: name, tensor: try source.tensor(name)))
                continue
            }
            let (rows, columns) = (entry.shape[0], entry.shape[1])
            let scaleShape = [(rows + 15) / 16, (columns + 15) / 16]
            let bytes = (0..<(rows * columns)).map { _ -> UInt8 in
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                let bits = UInt8(truncatingIfNeeded: state >> 33)
                return bits & 0x7F == 0x7F ? bits & 0xF0 : bits  // no NaN
            }
            let scales = (0..<scaleShape.reduce(1, *)).map { Float($0 + 1) / 64 }
            expected[name] = (0..<(rows * columns)).map { index in
                let (row, column) = (index / columns, index % columns)
                return naiveE4M3(bytes[index]) * scales[(row / 16) * scaleShape[1] + column / 16]
            }
            entries.append(SafeTensorsWriter.Entry(name: name, dtype: .f8e4m3, shape: entry.shape, bytes: bytes))
            if name != dropped {
                entries.append(
                    SafeTensorsWriter.Entry(
                        name: name + "_scale_inv",
                        tensor: try Tensor(shape: scaleShape, floats: scales)))
            }
        }
        try SafeTensorsWriter.write(entries, to: model.directory.file("model.safetensors"))
        var config = try ModelConfig.load(path: model.directory.file("config.json")).values
        config["quantization_config"] = .object([
            "quant_method": .string("fp8"), "fmt": .string("e4m3"),
            "weight_block_size": .array([.number(16), .number(16)]),
        ])
        try FileSystem.writeFile(model.directory.file("config.json"), chunks: [ModelConfig.json(config)])
        return (model, expected)
    }

    @Test("expert weights are read as stored: each fp8 value times its block's scale_inv")
    func readsBlockScaledWeights() throws {
        let (model, expected) = try self.fp8Model()
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let layer = try checkpoint.layer("0")
        for expert in 0..<2 {
            guard case .gated(let w1, let w3, let w2, _) = try checkpoint.expertWeights(layer: layer, expert: expert)
            else {
                Issue.record("expected a gated expert")
                return
            }
            let prefix = MixtralArchitecture.expertTensorPrefix(layer: "0", expert: expert)
            #expect(w1.values == expected[prefix + "w1.weight"])
            #expect(w3.values == expected[prefix + "w3.weight"])
            #expect(w2.values == expected[prefix + "w2.weight"])
        }
    }

    @Test("an fp8 weight without its scale_inv is refused, naming the tensor that is missing")
    func missingScalesRefused() throws {
        let name = MixtralArchitecture.expertTensorPrefix(layer: "0", expert: 1) + "w2.weight"
        let (model, _) = try self.fp8Model(dropScalesOf: name)
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        #expect(throws: ModelError.missingBlockScales(name: name, scales: name + "_scale_inv", folder: model.path)) {
            try checkpoint.expertWeights(layer: checkpoint.layer("0"), expert: 1)
        }
        #expect(
            ModelError.missingBlockScales(name: name, scales: name + "_scale_inv", folder: model.path).description
                .contains("'\(name)_scale_inv'"))
    }
}
