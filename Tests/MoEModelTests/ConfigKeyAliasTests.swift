import MoETestSupport
import Testing

@testable import MoEModel

/// transformers' configuration classes accept several spellings of some keys (their `attribute_map`s), and
/// transformers 5 writes some of them differently from the Hub's original files.
@Suite("config.json key aliases of transformers 4 and 5")
struct ConfigKeyAliasTests {
    /// Every alias group, with the golden model of its architecture.
    static let cases: [(modelType: String, group: [String])] = ConfigKeyAliases.groups.keys.sorted().flatMap { type in
        ConfigKeyAliases.groups[type]!.map { (type, $0) }
    }

    static func goldenConfig(_ modelType: String) throws -> ModelConfig {
        try ModelConfig.load(path: GoldenFixture(architecture: modelType, dtype: .f32).modelPath + "/config.json")
    }

    @Test("each alias spelling reads as the key it names", arguments: cases)
    func aliasReadsAsKey(modelType: String, group: [String]) throws {
        let config = try Self.goldenConfig(modelType)
        let original = try Architectures.resolve(config)
        let given = try #require(group.first { config.contains($0) }, "the golden config sets one of \(group)")
        for alias in group where alias != given {
            var values = config.values
            values[alias] = values.removeValue(forKey: given)
            let renamed = try Architectures.resolve(ModelConfig(path: config.path, values: values))
            #expect(renamed.layers == original.layers, "\(modelType): '\(alias)' for '\(given)'")
            #expect(renamed.hiddenSize == original.hiddenSize)
        }
    }

    @Test("both spellings given: accepted when they agree, refused naming both keys when they do not", arguments: cases)
    func duplicateSpellings(modelType: String, group: [String]) throws {
        let config = try Self.goldenConfig(modelType)
        let given = try #require(group.first { config.contains($0) })
        let value = try #require(config.values[given])
        guard case .number(let number) = value else {
            Issue.record("\(given) is not a number")
            return
        }
        for alias in group where alias != given {
            var agreeing = config.values
            agreeing[alias] = value
            _ = try Architectures.resolve(ModelConfig(path: config.path, values: agreeing))

            var disagreeing = config.values
            disagreeing[alias] = .number(number + 1)
            let expected = [given, alias].sorted { group.firstIndex(of: $0)! < group.firstIndex(of: $1)! }
            #expect {
                try Architectures.resolve(ModelConfig(path: config.path, values: disagreeing))
            } throws: { error in
                let message = "\(error)"
                return message.contains("'\(expected[0])'") && message.contains("'\(expected[1])'")
                    && message.contains("disagree")
            }
        }
    }

    @Test("the message says which values disagree")
    func message() throws {
        let config = ModelConfig(
            path: "m/config.json",
            values: ["model_type": .string("qwen3_moe"), "num_experts": .number(8), "num_local_experts": .number(16)])
        #expect(
            throws: ModelError.invalidConfig(
                path: "m/config.json",
                reason:
                    "'num_experts' (8) and 'num_local_experts' (16) name the same setting and disagree; keep one of them"
            )
        ) { try config.resolvingAliases() }
    }
}
