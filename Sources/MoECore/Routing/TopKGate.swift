import RealModule

/// The router gate of every supported model, as one parameterised top-k rule. For one token with router
/// logits `l = W_r · x` (`[E]`), all in f32:
///
/// 1. `l' = l + b_logit` (GPT-OSS router bias; zero elsewhere)
/// 2. scores `s = softmax(l')` | `σ(l')` (DeepSeek-V3) | `l'` (GPT-OSS)
/// 3. selection scores `c = s + b_sel` (DeepSeek-V3 `e_score_correction_bias`; selection only)
/// 4. group limit (DeepSeek): split the E experts into `n_group` groups, score each group (max of `c`, or the sum of
///    its two largest `c`), keep the `topk_group` best groups and mask the others to −∞
/// 5. `S = top-k(c)`, ties to the lower expert index
/// 6. weights `w = s_S` | `softmax(l'_S)` (GPT-OSS)
/// 7. `w /= Σ w` when `renormalize`; then `w *= scalingFactor` (DeepSeek `routed_scaling_factor`)
public struct TopKGate: Sendable, Equatable {
    public enum Scoring: String, Sendable, Equatable {
        case softmax, sigmoid, logits
    }

    /// DeepSeek's group-limited selection.
    public struct GroupLimit: Sendable, Equatable {
        public enum GroupScore: Sendable, Equatable {
            /// DeepSeek-V2 `group_limited_greedy`: the group's largest score.
            case max
            /// DeepSeek-V3 `noaux_tc`: the sum of the group's two largest selection scores.
            case sumOfTopTwo
        }

        public let groups: Int
        public let keptGroups: Int
        public let groupScore: GroupScore

        public init(groups: Int, keptGroups: Int, groupScore: GroupScore) {
            self.groups = groups
            self.keptGroups = keptGroups
            self.groupScore = groupScore
        }
    }

    public enum Weighting: Sendable, Equatable {
        /// `w = s_S`.
        case scores
        /// `w = softmax(l'_S)` over the selected logits (GPT-OSS).
        case softmaxOfSelected
    }

    public let numExperts: Int
    public let topK: Int
    public let renormalize: Bool
    public let scoring: Scoring
    public let groupLimit: GroupLimit?
    /// `[E]` added to the logits (GPT-OSS `router.bias`).
    public let logitBias: [Float]?
    /// `[E]` added to the scores for selection only (DeepSeek-V3 `e_score_correction_bias`).
    public let selectionBias: [Float]?
    public let weighting: Weighting
    public let scalingFactor: Float

    public init(
        numExperts: Int, topK: Int, renormalize: Bool, scoring: Scoring = .softmax, groupLimit: GroupLimit? = nil,
        logitBias: [Float]? = nil, selectionBias: [Float]? = nil, weighting: Weighting = .scores,
        scalingFactor: Float = 1
    ) {
        precondition(numExperts > 0, "a gate needs at least one expert")
        precondition((1...numExperts).contains(topK), "top-k must be in 1...\(numExperts), got \(topK)")
        precondition(logitBias.map { $0.count == numExperts } ?? true, "logit bias: one value per expert")
        precondition(selectionBias.map { $0.count == numExperts } ?? true, "selection bias: one value per expert")
        if let groupLimit {
            precondition(groupLimit.groups > 0 && numExperts % groupLimit.groups == 0, "groups must divide the experts")
            precondition((1...groupLimit.groups).contains(groupLimit.keptGroups), "kept groups must be in 1...groups")
        }
        self.numExperts = numExperts
        self.topK = topK
        self.renormalize = renormalize
        self.scoring = scoring
        self.groupLimit = groupLimit
        self.logitBias = logitBias
        self.selectionBias = selectionBias
        self.weighting = weighting
        self.scalingFactor = scalingFactor
    }

    /// `l' = l + b_logit` for one token's logits `[E]` (the logits themselves without a bias): the one place the
    /// logit bias is applied.
    public func biased(_ logits: ArraySlice<Float>) -> [Float] {
        guard let bias = self.logitBias else { return Array(logits) }
        return zip(logits, bias).map { $0 + $1 }
    }

    /// `l' = l + b_logit` for every row of `[T, E]` logits.
    public func biased(_ logits: Matrix) -> Matrix {
        guard self.logitBias != nil else { return logits }
        return Matrix(
            rows: logits.rows, columns: logits.columns,
            values: (0..<logits.rows).flatMap { self.biased(logits.row($0)) })
    }

    /// Scores of one token: `s` (for weights) and `c` (for selection, before the group mask). `[E]` each.
    public func scores(logits: ArraySlice<Float>) -> (scores: [Float], selection: [Float], biasedLogits: [Float]) {
        let biased = self.biased(logits)
        var scores: [Float]
        switch self.scoring {
        case .softmax: scores = Self.softmax(biased[...])
        case .sigmoid: scores = biased.map { 1 / (1 + Float.exp(-$0)) }
        case .logits: scores = biased
        }
        var selection = scores
        if let bias = self.selectionBias { for index in selection.indices { selection[index] += bias[index] } }
        return (scores, selection, biased)
    }

    /// Applies the group limit: selection scores of experts outside the kept groups become −∞.
    public func maskGroups(_ selection: inout [Float]) {
        guard let limit = self.groupLimit else { return }
        let size = self.numExperts / limit.groups
        let groupScores = (0..<limit.groups).map { group -> Float in
            let members = Array(selection[(group * size)..<((group + 1) * size)])
            switch limit.groupScore {
            case .max: return members.max() ?? -.infinity
            case .sumOfTopTwo:
                let top = Self.topIndices(of: members, k: min(2, members.count))
                return top.reduce(0) { $0 + members[$1] }
            }
        }
        let kept = Set(Self.topIndices(of: groupScores, k: limit.keptGroups))
        for group in 0..<limit.groups where !kept.contains(group) {
            for index in (group * size)..<((group + 1) * size) { selection[index] = -.infinity }
        }
    }

    /// Weights of a token's selected experts, by steps 6–7.
    public func weights(selected: [Int], scores: [Float], biasedLogits: [Float]) -> [Float] {
        var weights: [Float]
        switch self.weighting {
        case .scores: weights = selected.map { scores[$0] }
        case .softmaxOfSelected: weights = Self.softmax(selected.map { biasedLogits[$0] }[...])
        }
        if self.renormalize {
            let sum = weights.reduce(0, +)
            if sum > 0 { weights = weights.map { $0 / sum } }
        }
        if self.scalingFactor != 1 { weights = weights.map { $0 * self.scalingFactor } }
        return weights
    }

    /// Routes T tokens from their logits `[T, E]`; `masked` experts are never selected.
    public func route(logits: Matrix, masked: Set<Int> = []) -> RoutingDecision {
        precondition(logits.columns == self.numExperts, "logits: expected \(self.numExperts) columns")
        let k = self.topK
        var ids = [Int32](repeating: 0, count: logits.rows * k)
        var weights = [Float](repeating: 0, count: logits.rows * k)
        for token in 0..<logits.rows {
            let (scores, selectionScores, biased) = self.scores(logits: logits.row(token))
            var selection = selectionScores
            for expert in masked where expert < selection.count { selection[expert] = -.infinity }
            self.maskGroups(&selection)
            let selected = Self.topIndices(of: selection, k: k)
            let tokenWeights = self.weights(selected: selected, scores: scores, biasedLogits: biased)
            for slot in 0..<k {
                ids[token * k + slot] = Int32(selected[slot])
                weights[token * k + slot] = tokenWeights[slot]
            }
        }
        return RoutingDecision(
            tokenCount: logits.rows, topK: k, numExperts: self.numExperts, topkIDs: ids, topkWeights: weights)
    }

    /// `p_i = exp(l_i − max l) / Σ_j exp(l_j − max l)`.
    public static func softmax(_ logits: ArraySlice<Float>) -> [Float] {
        let maximum = logits.max() ?? 0
        var values = logits.map { Float.exp($0 - maximum) }
        let sum = values.reduce(0, +)
        for index in values.indices { values[index] /= sum }
        return values
    }

    /// Indices of the k largest scores, by descending score; equal scores keep the lower index first.
    public static func topIndices(of scores: [Float], k: Int) -> [Int] {
        var selected = [Int]()
        selected.reserveCapacity(k + 1)
        for index in scores.indices {
            // Insert after every selected index whose score is ≥ this one (so ties keep index order).
            var position = selected.count
            while position > 0 && scores[selected[position - 1]] < scores[index] { position -= 1 }
            if position < k {
                selected.insert(index, at: position)
                if selected.count > k { selected.removeLast() }
            }
        }
        return selected
    }
}
