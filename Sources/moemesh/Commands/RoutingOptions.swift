import ArgumentParser
import MoECore
import MoERouter

/// The router's routing-policy flags (see `RoutingConfiguration`).
struct RoutingOptions: ParsableArguments {
    @Option(
        help:
            "Routing strategy: model (the architecture's gate), noisy-top-k, hash (needs token ids), expert-choice (prefill only), top-2 (GShard/fairseq second-expert policies), hierarchical (a group gate, then the model's gate inside the kept groups)."
    )
    var routing: RoutingConfiguration.Strategy = .model

    @Option(
        help:
            "top-2: what happens to the second expert: all (always kept), sampling (chosen by Gumbel sampling), random (kept with probability min(1, 2·w₂), w₁ = 1 when dropped), gshard (as random, w₁ unchanged)."
    )
    var secondExpertPolicy: SecondExpertPolicy = .gshard

    @Option(help: "hierarchical: groups of consecutive experts (must divide each layer's experts).")
    var groups: Int = 1

    @Option(help: "hierarchical: groups kept per token by the group gate.")
    var keptGroups: Int = 1

    @Option(help: "hierarchical: a group's score from its members' scores: max or top2-sum.")
    var groupScore: RoutingConfiguration.GroupScore = .max

    @Option(help: "Noise scale σ of noisy top-k: h = l + σ·N(0,1).")
    var noiseStd: Float = 1

    @Option(help: "Seed of noisy top-k (a request may give its own).")
    var seed: UInt64 = 0

    @Option(help: "Capacity factor c of expert choice: each expert takes ⌈T·c/E⌉ tokens.")
    var expertChoiceCapacity: Double = 1

    @Option(help: "Limit rows per expert to ⌈c·T·k/E⌉ (off by default).")
    var capacityFactor: Double?

    @Option(help: "What happens to a slot over capacity: drop (no contribution) or spill (next-best expert with room).")
    var overflow: CapacityLimit.Overflow = .drop

    @Flag(help: "Switch Transformers: apply the config's per-sequence expert_capacity (dropped tokens give max p · x).")
    var switchCapacity = false

    @Option(
        help:
            "When no replica of an expert answers: fail (UNAVAILABLE naming it) or reroute (next-best experts, flagged)."
    )
    var onUnreachable: UnreachablePolicy = .fail

    @Flag(
        help:
            "While a layer runs, send its replicas a Prefetch hint for the experts the next layer will likely need (its gate on this layer's input): experts under a GPU or memory budget load ahead."
    )
    var prefetchNextLayer = false

    func configuration() throws -> RoutingConfiguration {
        if let factor = self.capacityFactor, !(factor > 0) {
            throw ValidationError("--capacity-factor: expected a positive number, got \(factor)")
        }
        guard self.noiseStd >= 0, self.expertChoiceCapacity > 0 else {
            throw ValidationError("--noise-std must be ≥ 0 and --expert-choice-capacity > 0")
        }
        return RoutingConfiguration(
            strategy: self.routing, noiseStd: self.noiseStd, seed: self.seed,
            expertChoiceCapacity: self.expertChoiceCapacity,
            capacity: self.capacityFactor.map { CapacityLimit(factor: $0, overflow: self.overflow) },
            switchCapacity: self.switchCapacity, rerouteUnreachable: self.onUnreachable == .reroute,
            prefetchNextLayer: self.prefetchNextLayer, secondExpert: self.secondExpertPolicy, groups: self.groups,
            keptGroups: self.keptGroups, groupScore: self.groupScore)
    }

    /// The same options as arguments for a `moemesh router` child process.
    var arguments: [String] {
        var arguments = [
            "--routing", self.routing.rawValue, "--noise-std", "\(self.noiseStd)", "--seed", "\(self.seed)",
            "--expert-choice-capacity", "\(self.expertChoiceCapacity)", "--overflow", self.overflow.rawValue,
            "--second-expert-policy", self.secondExpertPolicy.rawValue, "--groups", "\(self.groups)",
            "--kept-groups", "\(self.keptGroups)", "--group-score", self.groupScore.rawValue,
        ]
        if let factor = self.capacityFactor { arguments += ["--capacity-factor", "\(factor)"] }
        if self.switchCapacity { arguments.append("--switch-capacity") }
        arguments += ["--on-unreachable", self.onUnreachable.rawValue]
        if self.prefetchNextLayer { arguments.append("--prefetch-next-layer") }
        return arguments
    }
}

extension RoutingConfiguration.Strategy: ExpressibleByArgument {}
extension CapacityLimit.Overflow: ExpressibleByArgument {}
extension SecondExpertPolicy: ExpressibleByArgument {}
extension RoutingConfiguration.GroupScore: ExpressibleByArgument {}

enum UnreachablePolicy: String, ExpressibleByArgument {
    case fail, reroute
}
