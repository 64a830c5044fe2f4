import MoECore
import MoEModel

/// The router's routing policy, for every layer of the model (configuration keys in parentheses):
/// strategy (`--routing model|noisy-top-k|hash|expert-choice|top-2|hierarchical`, default `model`: the
/// architecture's own gate), top-2's second-expert policy (`--second-expert-policy all|sampling|random|gshard`,
/// gshard), hierarchical routing's groups (`--groups G --kept-groups M --group-score max|top2-sum`, max),
/// noise scale σ of noisy top-k (`--noise-std`, 1.0) and its seed (`--seed`, 0), the capacity factor c of
/// expert choice (`--expert-choice-capacity`, 1.0), an optional capacity limit `⌈c·T·k/E⌉` per expert
/// (`--capacity-factor c --overflow drop|spill`), and Switch's per-sequence `expert_capacity`
/// (`--switch-capacity`; dropless by default), and what to do when no replica of an expert can be reached
/// (`--on-unreachable fail|reroute`, default fail: `UNAVAILABLE` naming the expert; reroute: its tokens go to their
/// next-best experts, flagged in the answer).
public struct RoutingConfiguration: Sendable, Equatable {
    public enum Strategy: String, Sendable, CaseIterable {
        case model
        case noisyTopK = "noisy-top-k"
        case hash
        case expertChoice = "expert-choice"
        case topTwo = "top-2"
        case hierarchical
    }

    /// How hierarchical routing scores a group from its members' selection scores.
    public enum GroupScore: String, Sendable, CaseIterable {
        case max
        case top2Sum = "top2-sum"
    }

    public var strategy: Strategy
    public var noiseStd: Float
    public var seed: UInt64
    public var expertChoiceCapacity: Double
    public var capacity: CapacityLimit?
    public var switchCapacity: Bool
    public var rerouteUnreachable: Bool
    public var secondExpert: SecondExpertPolicy
    public var groups: Int
    public var keptGroups: Int
    public var groupScore: GroupScore
    /// Hint the next layer's likely experts to their replicas while a layer runs (`RouterService.prefetchNextLayer`).
    public var prefetchNextLayer: Bool

    public init(
        strategy: Strategy = .model, noiseStd: Float = 1, seed: UInt64 = 0, expertChoiceCapacity: Double = 1,
        capacity: CapacityLimit? = nil, switchCapacity: Bool = false, rerouteUnreachable: Bool = false,
        prefetchNextLayer: Bool = false, secondExpert: SecondExpertPolicy = .gshard, groups: Int = 1,
        keptGroups: Int = 1, groupScore: GroupScore = .max
    ) {
        self.secondExpert = secondExpert
        self.groups = groups
        self.keptGroups = keptGroups
        self.groupScore = groupScore
        self.prefetchNextLayer = prefetchNextLayer
        self.strategy = strategy
        self.noiseStd = noiseStd
        self.seed = seed
        self.expertChoiceCapacity = expertChoiceCapacity
        self.capacity = capacity
        self.switchCapacity = switchCapacity
        self.rerouteUnreachable = rerouteUnreachable
    }

    /// The policy of one layer.
    public func policy(for layer: MoELayerSpec) -> RoutingPolicy {
        let strategy: RoutingStrategy
        switch self.strategy {
        case .model: strategy = .model
        case .noisyTopK: strategy = .noisyTopK(noiseStd: self.noiseStd)
        case .hash: strategy = .hash
        case .expertChoice: strategy = .expertChoice(capacityFactor: self.expertChoiceCapacity)
        case .topTwo: strategy = .topTwo(secondExpert: self.secondExpert)
        case .hierarchical:
            strategy = .hierarchical(
                TopKGate.GroupLimit(
                    groups: self.groups, keptGroups: self.keptGroups,
                    groupScore: self.groupScore == .max ? .max : .sumOfTopTwo))
        }
        return RoutingPolicy(
            strategy: strategy, capacity: self.capacity,
            sequenceCapacity: self.switchCapacity ? layer.expertCapacity : nil, seed: self.seed,
            rerouteUnreachable: self.rerouteUnreachable)
    }

    /// A short description, e.g. `noisy-top-k(std 1.0), capacity 1.25 spill`.
    public var summary: String {
        var text: String
        switch self.strategy {
        case .model, .hash: text = self.strategy.rawValue
        case .noisyTopK: text = "noisy-top-k(std \(self.noiseStd), seed \(self.seed))"
        case .expertChoice: text = "expert-choice(c \(self.expertChoiceCapacity))"
        case .topTwo: text = "top-2(second expert \(self.secondExpert.rawValue), seed \(self.seed))"
        case .hierarchical:
            text = "hierarchical(\(self.groups) groups, keep \(self.keptGroups), by \(self.groupScore.rawValue))"
        }
        if let capacity = self.capacity { text += ", capacity \(capacity.factor) \(capacity.overflow.rawValue)" }
        if self.switchCapacity { text += ", switch per-sequence capacity" }
        if self.rerouteUnreachable { text += ", reroute unreachable experts" }
        if self.prefetchNextLayer { text += ", prefetch hints for the next layer" }
        return text
    }
}

extension RoutingConfiguration {
    /// Checks the policy against every layer of a model: hierarchical groups must divide each layer's experts and
    /// the kept groups hold at least top-k of them; top-2 needs two experts. Returns the first problem, or nil.
    public func problem(for layers: [MoELayerSpec]) -> String? {
        for layer in layers {
            switch self.strategy {
            case .hierarchical:
                guard self.groups > 0, layer.numExperts % self.groups == 0, (1...self.groups).contains(self.keptGroups),
                    self.keptGroups * (layer.numExperts / self.groups) >= layer.topK
                else {
                    return "layer \(layer.name): "
                        + RoutingError.invalidHierarchy(
                            experts: layer.numExperts, topK: layer.topK, groups: self.groups,
                            keptGroups: self.keptGroups
                        ).description
                }
            case .topTwo where layer.numExperts < 2:
                return "layer \(layer.name): "
                    + RoutingError.topTwoNeedsTwoExperts(experts: layer.numExperts).description
            default: continue
            }
        }
        return nil
    }
}
