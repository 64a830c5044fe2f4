import MoECore
import MoEModel
import RealModule

/// The output of one MoE layer for T tokens, with the routing that produced it.
public struct MoELayerResult: Sendable, Equatable {
    /// `[T, H]`.
    public let output: Matrix
    public let routing: RoutingDecision
    public let balance: BalanceStats
    /// `[T, E]` router logits (bias included).
    public let logits: Matrix
    /// Experts no replica could serve, masked out of this result's routing (`RoutingPolicy.rerouteUnreachable`).
    public var reroutedExperts: [Int] = []

    public init(output: Matrix, routing: RoutingDecision, balance: BalanceStats, logits: Matrix) {
        self.output = output
        self.routing = routing
        self.balance = balance
        self.logits = logits
    }

    /// Whether calls under `policy` may be concatenated into one batch and split again: the model's own gate
    /// decides each token alone. (Hash routing does too, but needs each call's token ids; capacity, expert choice
    /// and noisy top-k depend on the whole batch or on token positions.)
    public static func isTokenwise(_ policy: RoutingPolicy) -> Bool {
        guard policy.capacity == nil, policy.sequenceCapacity == nil, case .model = policy.strategy else {
            return false
        }
        return true
    }

    /// Rows `range` of the result: the part of a concatenated batch that belongs to one request.
    public func rows(_ range: Range<Int>) -> MoELayerResult {
        let h = self.output.columns, e = self.logits.columns, k = self.routing.topK
        let output = Matrix(
            rows: range.count, columns: h,
            values: Array(self.output.values[(range.lowerBound * h)..<(range.upperBound * h)]))
        let logits = Matrix(
            rows: range.count, columns: e,
            values: Array(self.logits.values[(range.lowerBound * e)..<(range.upperBound * e)]))
        let routing = RoutingDecision(
            tokenCount: range.count, topK: k, numExperts: self.routing.numExperts,
            topkIDs: Array(self.routing.topkIDs[(range.lowerBound * k)..<(range.upperBound * k)]),
            topkWeights: Array(self.routing.topkWeights[(range.lowerBound * k)..<(range.upperBound * k)]),
            residualWeights: self.routing.residualWeights.map { Array($0[range]) })
        var part = MoELayerResult(
            output: output, routing: routing, balance: BalanceStats(logits: logits, decision: routing), logits: logits)
        part.reroutedExperts = self.reroutedExperts
        return part
    }
}

/// One MoE layer as separate, named steps:
/// logits `l = X · W_rᵀ` (`[T, E]`) → `RoutingDecision` (gate and policy) → `DispatchPlan` → expert compute (one call
/// per expert with rows, plus the shared expert on every row, all concurrent) → `Combiner`
/// (`y_t = Σ_j w_{t,j} · E_{id_{t,j}}(x_t) + g_t · S(x_t) + r_t · x_t`).
public struct MoELayerPipeline: Sendable {
    public let spec: MoELayerSpec
    /// The complete gate: the layer's rule with the checkpoint's biases.
    public let gate: TopKGate
    public let router: LayerRouterWeights
    public let policy: RoutingPolicy

    public init(spec: MoELayerSpec, router: LayerRouterWeights, policy: RoutingPolicy = .model) {
        precondition(router.weight.rows == spec.numExperts && router.weight.columns == spec.hiddenSize)
        self.spec = spec
        self.router = router
        self.policy = policy
        let rule = spec.gate
        self.gate = TopKGate(
            numExperts: rule.numExperts, topK: rule.topK, renormalize: rule.renormalize, scoring: rule.scoring,
            groupLimit: rule.groupLimit, logitBias: router.logitBias ?? rule.logitBias,
            selectionBias: router.selectionBias ?? rule.selectionBias, weighting: rule.weighting,
            scalingFactor: rule.scalingFactor)
    }

    /// Loads the layer's router tensors from a checkpoint.
    public init(checkpoint: MoECheckpoint, layer: MoELayerSpec, policy: RoutingPolicy = .model) throws(ModelError) {
        self.init(spec: layer, router: try checkpoint.routerWeights(layer: layer), policy: policy)
    }

    /// The same layer with `experts` also masked out of routing (pruned by an admin): the gate picks among the
    /// others, weights renormalised over them.
    public func masking(_ experts: Set<Int>) -> MoELayerPipeline {
        guard !experts.isSubset(of: self.policy.maskedExperts) else { return self }
        var policy = self.policy
        policy.maskedExperts.formUnion(experts)
        return MoELayerPipeline(spec: self.spec, router: self.router, policy: policy)
    }

    /// `l = X · W_rᵀ`, `[T, E]`: batch-invariant (`GateProjection`), so a token routes bitwise the same alone, in any
    /// batch, in any process and under any BLAS kernel set.
    public func logits(_ hidden: Matrix) -> Matrix { GateProjection.logits(hidden, self.router.weight) }

    /// Scores and routes `hidden` (`[T, H]`) under the layer's policy.
    public func route(_ hidden: Matrix, request: RoutingRequest = .init()) throws(RoutingError) -> RoutingDecision {
        try self.route(logits: self.logits(hidden), request: request)
    }

    private func route(
        logits: Matrix, request: RoutingRequest, policy: RoutingPolicy? = nil
    ) throws(RoutingError) -> RoutingDecision {
        let policy = policy ?? self.policy
        let shape = request.shape ?? [logits.rows, self.spec.hiddenSize]
        let input = RoutingInput(
            logits: logits, sequenceLength: shape.count == 3 ? shape[1] : logits.rows, shape: shape,
            tokenIDs: request.tokenIDs, noiseSeed: request.noiseSeed ?? policy.seed)
        return try self.gate.route(input, policy: policy)
    }

    /// The whole layer on `hidden` (`[T, H]`, already validated), experts run by `executor`. Under
    /// `rerouteUnreachable`, an expert that cannot be reached is masked and the tokens routed again, while at least
    /// k experts remain; rows the experts already computed are kept, so only the (expert, token) rows the new
    /// routing adds are computed.
    public func forward(
        _ hidden: Matrix, request: RoutingRequest = .init(), executor: some ExpertExecutor
    ) async throws -> MoELayerResult {
        var policy = self.policy
        var rerouted: [Int] = []
        var computed = ComputedExpertRows()
        while true {
            do {
                var result = try await self.forward(
                    hidden, request: request, executor: executor, policy: policy, computed: &computed)
                result.reroutedExperts = rerouted
                return result
            } catch let error as any ExpertUnreachableError {
                guard policy.rerouteUnreachable, let expert = error.unreachableExpert?.expert, expert >= 0,
                    !policy.maskedExperts.contains(expert),
                    self.spec.numExperts - policy.maskedExperts.count - 1 >= self.spec.topK
                else { throw error }
                policy.maskedExperts.insert(expert)
                rerouted.append(expert)
            }
        }
    }

    /// One routing of the layer: each active expert computes the rows of its tokens that `computed` lacks (all of
    /// them, the first time), which are added to `computed` as they arrive; then the combine.
    private func forward(
        _ hidden: Matrix, request: RoutingRequest, executor: some ExpertExecutor, policy: RoutingPolicy,
        computed: inout ComputedExpertRows
    ) async throws -> MoELayerResult {
        let logits = self.logits(hidden)
        let routing = try self.route(logits: logits, request: request, policy: policy)
        let plan = DispatchPlan(routing)
        let layer = self.spec.name
        let needsShared = self.spec.sharedExpert != nil && computed.shared == nil
        let work = plan.activeExperts.compactMap { expert -> (Int, [Int32]?)? in
            guard computed.hasRows(of: expert) else { return (expert, nil) }
            let tokens = plan.tokens(ofExpert: expert)
            let missing = computed.missing(expert: expert, of: tokens)
            // nil: every token of the plan (gathered through the plan, without a copy of the token list).
            return missing.isEmpty ? nil : (expert, missing.count == tokens.count ? nil : missing)
        }
        var parts: [ExpertRows] = []
        var tokens: [ArraySlice<Int32>] = []
        for (expert, subset) in work {
            if let subset {
                parts.append(ExpertRows(layer: layer, expert: expert, hidden: Self.rows(subset, of: hidden), plan: nil))
                tokens.append(subset[...])
            } else {
                parts.append(ExpertRows(layer: layer, expert: expert, hidden: hidden, plan: plan))
                tokens.append(plan.tokens(ofExpert: expert))
            }
        }
        if needsShared {
            parts.append(ExpertRows(layer: layer, expert: ExpertAddress.shared, hidden: hidden, plan: nil))
            tokens.append([])
        }
        if !parts.isEmpty {
            let computedNow = await executor.compute(parts)
            for (index, output) in computedNow.outputs.enumerated() {
                guard let output else { continue }
                if parts[index].expert == ExpertAddress.shared {
                    computed.shared = output
                } else {
                    computed.add(expert: parts[index].expert, tokens: tokens[index], output: output)
                }
            }
            if let failure = computedNow.failure { throw failure }
        }
        var outputs = [Matrix?](repeating: nil, count: self.spec.numExperts)
        for expert in plan.activeExperts {
            outputs[expert] = computed.output(
                expert: expert, for: plan.tokens(ofExpert: expert), width: self.spec.hiddenSize)
        }
        let sharedTerm = computed.shared.map { Combiner.SharedTerm(output: $0, gate: self.sharedGate(hidden)) }
        let output = Combiner.combine(
            routing, plan: plan, expertOutputs: outputs, hiddenSize: self.spec.hiddenSize, shared: sharedTerm,
            hidden: hidden)
        let biasedLogits = self.gate.biased(logits)
        return MoELayerResult(
            output: output, routing: routing, balance: BalanceStats(logits: biasedLogits, decision: routing),
            logits: biasedLogits)
    }

    /// Rows `tokens` of `hidden`, `[tokens.count, H]`.
    private static func rows(_ tokens: [Int32], of hidden: Matrix) -> Matrix {
        var values: [Float] = []
        values.reserveCapacity(tokens.count * hidden.columns)
        for token in tokens {
            let start = Int(token) * hidden.columns
            values.append(contentsOf: hidden.values[start..<(start + hidden.columns)])
        }
        return Matrix(rows: tokens.count, columns: hidden.columns, values: values)
    }

    /// `g_t = σ(w_sg · x_t)` for a gated shared expert, `[T]`; nil when ungated.
    func sharedGate(_ hidden: Matrix) -> [Float]? {
        guard self.spec.sharedExpert?.gated == true, let weight = self.router.sharedExpertGate else { return nil }
        return GateProjection.logits(hidden, weight).values.map { 1 / (1 + Float.exp(-$0)) }
    }
}
