import MoECore

/// Writes a random Mixtral-layout model folder of any shape (`config.json` + `model.safetensors`).
///
/// Values are uniform and seeded: gate and w1/w3 in `±1/√H`, w2 in `±1/√I`, so activations keep unit scale.
public struct ModelSynthesizer: Sendable {
    public struct Shape: Sendable, Equatable, Hashable {
        public var experts: Int
        public var topK: Int
        public var hiddenSize: Int
        public var intermediateSize: Int
        public var layers: Int

        public init(experts: Int, topK: Int, hiddenSize: Int, intermediateSize: Int, layers: Int) {
            self.experts = experts
            self.topK = topK
            self.hiddenSize = hiddenSize
            self.intermediateSize = intermediateSize
            self.layers = layers
        }

        /// The demo model `moemesh up` serves when given none.
        public static let demo = Shape(experts: 8, topK: 2, hiddenSize: 512, intermediateSize: 1024, layers: 2)

        /// A readable problem with the shape, or nil.
        public var problem: String? {
            if experts < 1 { return "experts must be at least 1, got \(experts)" }
            if topK < 1 || topK > experts { return "top-k must be in 1...\(experts), got \(topK)" }
            if hiddenSize < 1 { return "hidden size must be at least 1, got \(hiddenSize)" }
            if intermediateSize < 1 { return "intermediate size must be at least 1, got \(intermediateSize)" }
            if layers < 1 { return "layers must be at least 1, got \(layers)" }
            return nil
        }
    }

    public let shape: Shape
    public let dtype: DType
    public let seed: UInt64

    public init(shape: Shape, dtype: DType = .f32, seed: UInt64 = 0) {
        precondition(shape.problem == nil, shape.problem ?? "")
        self.shape = shape
        self.dtype = dtype
        self.seed = seed
    }

    /// The `config.json` keys of the synthetic model.
    public var configValues: [String: JSONValue] {
        [
            "architectures": .array([.string("MixtralForCausalLM")]), "model_type": .string("mixtral"),
            "hidden_size": .number(Double(self.shape.hiddenSize)),
            "intermediate_size": .number(Double(self.shape.intermediateSize)),
            "num_hidden_layers": .number(Double(self.shape.layers)),
            "num_local_experts": .number(Double(self.shape.experts)),
            "num_experts_per_tok": .number(Double(self.shape.topK)), "hidden_act": .string("silu"),
            "torch_dtype": .string(self.dtype == .f32 ? "float32" : self.dtype == .bf16 ? "bfloat16" : "float16"),
        ]
    }

    /// Writes the folder (created if needed). Returns the number of bytes of weights written.
    @discardableResult
    public func write(to directory: String) throws(ModelError) -> Int {
        try FileSystem.createDirectory(directory)
        let (h, i) = (self.shape.hiddenSize, self.shape.intermediateSize)
        var entries: [SafeTensorsWriter.Entry] = []
        var stream: UInt64 = 0
        func tensor(_ name: String, _ shape: [Int], scale: Float) {
            stream += 1
            let values = Self.uniform(count: shape.reduce(1, *), scale: scale, seed: self.seed &* 1_000_003 &+ stream)
            entries.append(
                .init(
                    name: name, dtype: SafeTensorsDType(self.dtype), shape: shape,
                    bytes: self.dtype.encodeBytes(values)))
        }
        for layer in 0..<self.shape.layers {
            tensor(
                "model.layers.\(layer).block_sparse_moe.gate.weight", [self.shape.experts, h],
                scale: 1 / Float(h).squareRoot())
            for expert in 0..<self.shape.experts {
                let prefix = MixtralArchitecture.expertTensorPrefix(layer: String(layer), expert: expert)
                tensor(prefix + "w1.weight", [i, h], scale: 1 / Float(h).squareRoot())
                tensor(prefix + "w2.weight", [h, i], scale: 1 / Float(i).squareRoot())
                tensor(prefix + "w3.weight", [i, h], scale: 1 / Float(h).squareRoot())
            }
        }
        try SafeTensorsWriter.write(
            entries, metadata: ["format": "pt", "generator": "moemesh synth"],
            to: FileSystem.join(directory, "model.safetensors"))
        try FileSystem.writeFile(
            FileSystem.join(directory, "config.json"), chunks: [ModelConfig.json(self.configValues)])
        return entries.reduce(0) { $0 + $1.bytes.count }
    }

    /// `count` values uniform in `[−scale, scale)` from a PCG-style LCG stream.
    public static func uniform(count: Int, scale: Float, seed: UInt64) -> [Float] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 &+ 1
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            for index in 0..<count {
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                let unit = Float((state >> 40) & 0xFF_FFFF) / Float(1 << 24)
                buffer[index] = (unit * 2 - 1) * scale
            }
            initialized = count
        }
    }
}
