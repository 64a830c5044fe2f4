import MoECore
import MoEModel

/// A checkpoint written by scripts/golden/make_golden_models.py and its reference outputs.
public struct GoldenFixture: Sendable, CustomStringConvertible {
    /// How config.json spells its keys: as the Hub's original files do, or as transformers 5's `save_pretrained`
    /// writes them (f32 only; same tensors and reference as the Hub spelling).
    public enum Spelling: Sendable { case hub, transformers5 }

    public let architecture: String
    public let dtype: DType
    public let spelling: Spelling

    public init(architecture: String, dtype: DType, spelling: Spelling = .hub) {
        self.architecture = architecture
        self.dtype = dtype
        self.spelling = spelling
    }

    public static let architectures = [
        "mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "gpt_oss", "switch_transformers",
    ]

    /// Every architecture in f32 and bf16, and in f32 spelled as transformers 5 writes it.
    public static let all: [GoldenFixture] = architectures.flatMap { name in
        [
            GoldenFixture(architecture: name, dtype: .f32), GoldenFixture(architecture: name, dtype: .bf16),
            GoldenFixture(architecture: name, dtype: .f32, spelling: .transformers5),
        ]
    }

    public static let folder: String = {
        var path = #filePath
        for _ in 0..<2 { path = String(path[..<path.lastIndex(of: "/")!]) }
        return path + "/Fixtures/golden"
    }()

    public var name: String { self.referenceName + (self.spelling == .transformers5 ? "-tf5" : "") }
    public var description: String { self.name }
    public var modelPath: String { Self.folder + "/" + self.name }
    /// The reference outputs are those of the Hub-spelled model with the same tensors.
    private var referenceName: String { "\(self.architecture)-\(self.dtype)" }
    /// Relative error allowed: f32 weights 1e-5, bf16 weights 1e-2.
    public var tolerance: Double { self.dtype == .f32 ? 1e-5 : 1e-2 }

    public func reference() throws -> SafeTensorsFile {
        try SafeTensorsFile(path: Self.folder + "/" + self.referenceName + ".reference.safetensors")
    }

    /// The MoE layers the reference covers, in file order.
    public func layers() throws -> [String] {
        try self.reference().entries.keys.filter { $0.hasSuffix(".topk_ids") }
            .map { String($0.dropLast(".topk_ids".count)) }.sorted()
    }
}
