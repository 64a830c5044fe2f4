import RealModule

/// How tokens are assigned to experts, chosen by configuration for any model (see `RoutingPolicy`).
public enum RoutingStrategy: Sendable, Equatable {
    /// The model's own gate (`TopKGate`).
    case model
    /// Noisy top-k (Shazeer 2017): `h = l' + σ · N(0, 1)` (seeded), `S = top-k(h)`, `w = softmax(h_S)`.
    case noisyTopK(noiseStd: Float)
    /// Hash routing: expert `= splitmix64(token id) mod E`, weight 1. Needs token ids in the request.
    case hash
    /// Expert choice (Zhou 2022): with the gate's scores `s`, each expert takes its `C = ⌈T · c / E⌉` best tokens
    /// by `s_{t,e}` (ties: lower token index); `w = s_{t,e}`. A token may get 0..E experts. Not causal: prefill only.
    case expertChoice(capacityFactor: Double)
    /// Top-2 softmax gating with a second-expert policy (GShard, fairseq), seeded per token like noisy top-k.
    case topTwo(secondExpert: SecondExpertPolicy)
    /// Two-level routing for any model: a group gate over `groups` groups of consecutive experts keeps the
    /// `keptGroups` best (group score: max, or sum of the top two, of their members' selection scores), then the
    /// model's gate chooses its top-k inside them (DeepSeek's group-limited routing is one case).
    case hierarchical(TopKGate.GroupLimit)
}

/// A limit on rows per expert per request: `C = ⌈c · T · k / E⌉`. Slots are admitted by rank (every token's first
/// choice, then every token's second, ...), tokens in order. An overflowing slot is dropped (contributes nothing)
/// or spills to the token's next-best expert that has room (weights recomputed by the gate over the final set).
public struct CapacityLimit: Sendable, Equatable {
    public enum Overflow: String, Sendable, Equatable { case drop, spill }

    public let factor: Double
    public let overflow: Overflow

    public init(factor: Double, overflow: Overflow) {
        precondition(factor > 0, "capacity factor must be positive")
        self.factor = factor
        self.overflow = overflow
    }

    public func capacity(tokens: Int, topK: Int, experts: Int) -> Int {
        Int((self.factor * Double(tokens * topK) / Double(experts)).rounded(.up))
    }
}

/// The routing configuration of a layer: strategy, capacity, and Switch's per-sequence capacity.
public struct RoutingPolicy: Sendable, Equatable {
    public var strategy: RoutingStrategy
    public var capacity: CapacityLimit?
    /// Switch Transformers' original rule: within each sequence, in token order, a token is kept only while its
    /// expert's running count is ≤ this; a dropped token's output is its own hidden state times its weight
    /// (`max p · x`).
    public var sequenceCapacity: Int?
    /// Seed of noisy top-k (each request may give its own).
    public var seed: UInt64
    /// Experts taken out of routing: their selection scores are −∞, so tokens go to their next-best experts and
    /// weights follow the gate's own rule over the experts chosen.
    public var maskedExperts: Set<Int>
    /// When an expert cannot be reached at all: false fails the call; true recomputes the layer with that expert
    /// masked (its tokens go to their next-best experts) and flags it in the answer.
    public var rerouteUnreachable: Bool

    public init(
        strategy: RoutingStrategy = .model, capacity: CapacityLimit? = nil, sequenceCapacity: Int? = nil,
        seed: UInt64 = 0, maskedExperts: Set<Int> = [], rerouteUnreachable: Bool = false
    ) {
        self.strategy = strategy
        self.capacity = capacity
        self.sequenceCapacity = sequenceCapacity
        self.seed = seed
        self.maskedExperts = maskedExperts
        self.rerouteUnreachable = rerouteUnreachable
    }

    public static let model = RoutingPolicy()
}

/// Why a batch could not be routed under the configured policy.
public enum RoutingError: Error, Sendable, Equatable, CustomStringConvertible {
    case missingTokenIDs(tokens: Int)
    case tokenIDCount(expected: Int, got: Int)
    case expertChoiceNeedsPrefill(shape: [Int])
    case topTwoNeedsTwoExperts(experts: Int)
    case invalidHierarchy(experts: Int, topK: Int, groups: Int, keptGroups: Int)

    public var description: String {
        switch self {
        case .missingTokenIDs(let tokens):
            "token_ids: hash routing needs one token id per token: expected \(tokens), got none"
        case .tokenIDCount(let expected, let got):
            "token_ids: expected \(expected) (one per token), got \(got)"
        case .expertChoiceNeedsPrefill(let shape):
            "expert-choice routing is not causal and serves prefill only: expected several tokens per sequence, "
                + "got shape \(shape)"
        case .topTwoNeedsTwoExperts(let experts):
            "top-2 routing: expected a layer of at least 2 experts, got \(experts)"
        case .invalidHierarchy(let experts, let topK, let groups, let keptGroups):
            "hierarchical routing: expected a group count that divides the layer's \(experts) experts and kept groups "
                + "holding at least top-k (\(topK)) experts, got \(groups) groups, \(keptGroups) kept"
        }
    }
}

/// A batch to route: logits `[T, E]`, how the tokens form sequences, and optional token ids.
public struct RoutingInput: Sendable {
    public let logits: Matrix
    /// Tokens per sequence: S for `[B, S, H]`, T for `[T, H]`.
    public let sequenceLength: Int
    /// The request's shape, for messages.
    public let shape: [Int]
    public let tokenIDs: [Int64]?
    /// Seed of this request's noise (noisy top-k).
    public let noiseSeed: UInt64

    public init(logits: Matrix, sequenceLength: Int, shape: [Int], tokenIDs: [Int64]? = nil, noiseSeed: UInt64 = 0) {
        self.logits = logits
        self.sequenceLength = max(1, sequenceLength)
        self.shape = shape
        self.tokenIDs = tokenIDs
        self.noiseSeed = noiseSeed
    }
}

extension TopKGate {
    /// Routes a batch under `policy`: the strategy's selection, then the capacity rules.
    public func route(_ input: RoutingInput, policy: RoutingPolicy) throws(RoutingError) -> RoutingDecision {
        if case .hierarchical(let limit) = policy.strategy {
            guard limit.groups > 0, self.numExperts % limit.groups == 0, (1...limit.groups).contains(limit.keptGroups),
                limit.keptGroups * (self.numExperts / limit.groups) >= self.topK
            else {
                throw .invalidHierarchy(
                    experts: self.numExperts, topK: self.topK, groups: limit.groups, keptGroups: limit.keptGroups)
            }
            // The limited gate routes, and the capacity rules below spill within the kept groups.
            var model = policy
            model.strategy = .model
            return try self.limited(to: limit).route(input, policy: model)
        }
        let tokens = input.logits.rows
        var decision: RoutingDecision
        switch policy.strategy {
        case .model, .hierarchical:
            decision = self.route(logits: input.logits, masked: policy.maskedExperts)
        case .topTwo(let secondExpert):
            guard self.numExperts >= 2 else { throw .topTwoNeedsTwoExperts(experts: self.numExperts) }
            decision = self.routeTopTwo(
                input.logits, policy: secondExpert, seed: input.noiseSeed, masked: policy.maskedExperts)
        case .noisyTopK(let noiseStd):
            decision = self.routeNoisy(input.logits, noiseStd: noiseStd, seed: input.noiseSeed)
        case .hash:
            guard let ids = input.tokenIDs, !ids.isEmpty else { throw .missingTokenIDs(tokens: tokens) }
            guard ids.count == tokens else { throw .tokenIDCount(expected: tokens, got: ids.count) }
            decision = RoutingDecision(
                tokenCount: tokens, topK: 1, numExperts: self.numExperts,
                topkIDs: ids.map { Int32(SplitMix64.mix(UInt64(bitPattern: $0)) % UInt64(self.numExperts)) },
                topkWeights: [Float](repeating: 1, count: tokens))
        case .expertChoice(let factor):
            guard input.sequenceLength > 1 else { throw .expertChoiceNeedsPrefill(shape: input.shape) }
            decision = self.routeExpertChoice(input.logits, capacityFactor: factor)
        }
        if let capacity = policy.capacity {
            self.applyCapacity(capacity, to: &decision, logits: input.logits)
        }
        if let perSequence = policy.sequenceCapacity {
            Self.applySequenceCapacity(perSequence, sequenceLength: input.sequenceLength, to: &decision)
        }
        return decision
    }

    /// `h = l' + σ · n`, `n ~ N(0, 1)` from (seed, token, expert); `S = top-k(h)`; `w = softmax(h_S)`.
    func routeNoisy(_ logits: Matrix, noiseStd: Float, seed: UInt64) -> RoutingDecision {
        let k = self.topK
        var ids = [Int32](), weights = [Float]()
        for token in 0..<logits.rows {
            let (_, _, biased) = self.scores(logits: logits.row(token))
            let noisy = biased.enumerated().map { expert, logit in
                logit + noiseStd * SplitMix64.gaussian(seed: seed, token: token, expert: expert)
            }
            let selected = Self.topIndices(of: noisy, k: k)
            ids += selected.map(Int32.init)
            weights += Self.softmax(selected.map { noisy[$0] }[...])
        }
        return RoutingDecision(
            tokenCount: logits.rows, topK: k, numExperts: self.numExperts, topkIDs: ids, topkWeights: weights)
    }

    /// Expert choice: each expert picks its `⌈T · c / E⌉` best tokens by score.
    func routeExpertChoice(_ logits: Matrix, capacityFactor: Double) -> RoutingDecision {
        let tokens = logits.rows, experts = self.numExperts
        let capacity = min(tokens, max(1, Int((Double(tokens) * capacityFactor / Double(experts)).rounded(.up))))
        let scores = (0..<tokens).map { self.scores(logits: logits.row($0)).scores }
        var chosen = [[(expert: Int, weight: Float)]](repeating: [], count: tokens)
        for expert in 0..<experts {
            let column = (0..<tokens).map { scores[$0][expert] }
            for token in Self.topIndices(of: column, k: capacity) { chosen[token].append((expert, column[token])) }
        }
        let k = max(1, chosen.map(\.count).max() ?? 1)
        var ids = [Int32](repeating: RoutingDecision.dropped, count: tokens * k)
        var weights = [Float](repeating: 0, count: tokens * k)
        for token in 0..<tokens {
            let ordered = chosen[token].sorted {
                $0.weight != $1.weight ? $0.weight > $1.weight : $0.expert < $1.expert
            }
            for (slot, choice) in ordered.enumerated() {
                ids[token * k + slot] = Int32(choice.expert)
                weights[token * k + slot] = choice.weight
            }
        }
        return RoutingDecision(tokenCount: tokens, topK: k, numExperts: experts, topkIDs: ids, topkWeights: weights)
    }

    /// Admits slots by rank then token, at most `C` per expert; overflow drops or spills.
    func applyCapacity(_ limit: CapacityLimit, to decision: inout RoutingDecision, logits: Matrix) {
        let k = decision.topK, tokens = decision.tokenCount
        let capacity = limit.capacity(tokens: tokens, topK: k, experts: self.numExperts)
        var load = [Int](repeating: 0, count: self.numExperts)
        var changed = Set<Int>()
        for rank in 0..<k {
            for token in 0..<tokens {
                let slot = token * k + rank
                let expert = Int(decision.topkIDs[slot])
                guard expert >= 0 else { continue }
                if load[expert] < capacity {
                    load[expert] += 1
                    continue
                }
                changed.insert(token)
                decision.topkIDs[slot] = RoutingDecision.dropped
                decision.topkWeights[slot] = 0
                guard limit.overflow == .spill else { continue }
                // The next-best expert by selection score that this token does not use and that has room.
                let taken = Set(decision.topkIDs[(token * k)..<((token + 1) * k)].map(Int.init))
                var (_, selection, _) = self.scores(logits: logits.row(token))
                self.maskGroups(&selection)
                let ranked = Self.topIndices(of: selection, k: self.numExperts)
                if let spill = ranked.first(where: {
                    !taken.contains($0) && load[$0] < capacity && selection[$0] > -.infinity
                }) {
                    load[spill] += 1
                    decision.topkIDs[slot] = Int32(spill)
                }
            }
        }
        guard limit.overflow == .spill else { return }
        // Weights of tokens whose set changed: the gate's weights over the final set, in the token's slot order.
        for token in changed {
            let slots = (token * k)..<((token + 1) * k)
            let selected = slots.map { Int(decision.topkIDs[$0]) }.filter { $0 >= 0 }
            guard !selected.isEmpty else { continue }
            let (scores, _, biased) = self.scores(logits: logits.row(token))
            var weights = self.weights(selected: selected, scores: scores, biasedLogits: biased)[...]
            for slot in slots where decision.topkIDs[slot] >= 0 { decision.topkWeights[slot] = weights.removeFirst() }
        }
    }

    /// Switch's per-sequence capacity: running count per expert in token order within each sequence; a slot past
    /// the capacity is dropped and its weight moves to the token's own hidden state.
    static func applySequenceCapacity(_ capacity: Int, sequenceLength: Int, to decision: inout RoutingDecision) {
        let k = decision.topK
        var residual = decision.residualWeights ?? [Float](repeating: 0, count: decision.tokenCount)
        var counts = [Int](repeating: 0, count: decision.numExperts)
        for token in 0..<decision.tokenCount {
            if token % sequenceLength == 0 { counts = [Int](repeating: 0, count: decision.numExperts) }
            for slot in (token * k)..<((token + 1) * k) where decision.topkIDs[slot] >= 0 {
                let expert = Int(decision.topkIDs[slot])
                counts[expert] += 1
                if counts[expert] > capacity {
                    residual[token] += decision.topkWeights[slot]
                    decision.topkIDs[slot] = RoutingDecision.dropped
                    decision.topkWeights[slot] = 0
                }
            }
        }
        decision.residualWeights = residual
    }
}

/// SplitMix64: the hash of hash routing and the source of noisy top-k's Gaussian noise.
public enum SplitMix64 {
    /// The SplitMix64 finaliser of `x + golden ratio`.
    @inlinable
    public static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A seeded stream: `mix` of a counter that starts at the seed (the same numbers on every machine).
    public struct Generator: RandomNumberGenerator, Sendable {
        private var state: UInt64

        public init(seed: UInt64) { self.state = seed }

        public mutating func next() -> UInt64 {
            self.state &+= 1
            return SplitMix64.mix(self.state)
        }

        /// A uniform value in [0, 1).
        public mutating func unit() -> Double { Double(self.next() >> 11) / Double(1 << 53) }
    }

    /// A standard normal value for (seed, token, expert), by Box–Muller on two hashed uniforms.
    public static func gaussian(seed: UInt64, token: Int, expert: Int) -> Float {
        let base = mix(seed ^ mix(UInt64(token) &* 0x1_0000_0001 &+ UInt64(expert)))
        let u1 = (Double(base >> 11) + 0.5) / Double(1 << 53)
        let u2 = Double(mix(base) >> 11) / Double(1 << 53)
        return Float((-2 * Double.log(u1)).squareRoot() * Double.cos(2 * Double.pi * u2))
    }
}
