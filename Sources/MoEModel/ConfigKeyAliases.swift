/// The spellings of one setting that transformers accepts in a `config.json`, per `model_type`: the `attribute_map`s
/// of its configuration classes (transformers 5.24), which differ from the Hub's original files in places. A
/// Qwen3-MoE config saved by transformers 5 says `num_local_experts` where the Hub's says `num_experts`; a Mixtral
/// config may say `num_experts`. Each group lists the key the adapters read first, then its aliases.
public enum ConfigKeyAliases {
    public static let groups: [String: [[String]]] = [
        "mixtral": [["num_local_experts", "num_experts"]],
        "qwen3_moe": [["num_experts", "num_local_experts"]],
        "olmoe": [["num_experts", "num_local_experts"]],
        "deepseek_v2": [["n_routed_experts", "num_experts"]],
        "deepseek_v3": [["n_routed_experts", "num_local_experts"]],
        // `experts_per_token` is the spelling of OpenAI's original GPT-OSS config.
        "gpt_oss": [["num_local_experts", "num_experts"], ["num_experts_per_tok", "experts_per_token"]],
        "switch_transformers": [["d_model", "hidden_size"], ["num_layers", "num_hidden_layers"]],
    ]
}

extension ModelConfig {
    /// This config with every alias of `groups` resolved to the group's first key: a setting given under one
    /// spelling is read under the first; given under several, they must agree (else `invalidConfig` naming both).
    public func resolvingAliases(_ groups: [[String]]) throws(ModelError) -> ModelConfig {
        var values = self.values
        for group in groups {
            let given = group.filter { self.contains($0) }
            guard let first = given.first else { continue }
            for other in given.dropFirst() where self.values[other] != self.values[first] {
                throw .invalidConfig(
                    path: self.path,
                    reason: "'\(first)' (\(self.values[first]!.text)) and '\(other)' (\(self.values[other]!.text)) "
                        + "name the same setting and disagree; keep one of them")
            }
            values[group[0]] = self.values[first]
        }
        return ModelConfig(path: self.path, values: values)
    }

    /// The config with the aliases of its `model_type` resolved (`ConfigKeyAliases`).
    public func resolvingAliases() throws(ModelError) -> ModelConfig {
        try self.resolvingAliases(ConfigKeyAliases.groups[try self.modelType] ?? [])
    }
}
