import MoECore
import MoEKernels
import MoEModel

/// The output of one MoE layer for T tokens, with the routing that produced it.
public struct MoELayerResult: Sendable, Equatable {
    /// `[T, H]`.
    public let output: Matrix
    public let routing: RoutingDecision
}

/// One MoE layer as separate, named steps:
/// logits `l = X · W_rᵀ` (`[T, E]`) → `RoutingDecision` (gate) → `DispatchPlan` → expert compute (one call per
/// expert with rows, all concurrent) → `Combiner` (`y_t = Σ_j w_{t,j} · E_{id_{t,j}}(x_t)`).
public struct MoELayerPipeline: Sendable {
    public let spec: MoELayerSpec
    /// `W_r: [E, H]`.
    public let gateWeight: Matrix

    public init(spec: MoELayerSpec, gateWeight: Matrix) {
        precondition(gateWeight.rows == spec.numExperts && gateWeight.columns == spec.hiddenSize)
        self.spec = spec
        self.gateWeight = gateWeight
    }

    /// Loads the layer's gate from a checkpoint.
    public init(checkpoint: MoECheckpoint, layer: MoELayerSpec) throws(ModelError) {
        self.init(spec: layer, gateWeight: try checkpoint.gateWeight(layer: layer))
    }

    /// Scores and routes `hidden` (`[T, H]`).
    public func route(_ hidden: Matrix) -> RoutingDecision {
        self.spec.gate.route(logits: BLAS.multiplyTransposed(hidden, self.gateWeight))
    }

    /// The whole layer on `hidden` (`[T, H]`, already validated), experts run by `executor`.
    public func forward(_ hidden: Matrix, executor: some ExpertExecutor) async throws -> MoELayerResult {
        let routing = self.route(hidden)
        let plan = DispatchPlan(routing)
        let layer = self.spec.name
        let outputs = try await withThrowingTaskGroup(of: (Int, Matrix).self) { group in
            for expert in plan.activeExperts {
                let rows = ExpertRows(layer: layer, expert: expert, hidden: hidden, plan: plan)
                group.addTask { (expert, try await executor.compute(rows)) }
            }
            var outputs = [Matrix?](repeating: nil, count: self.spec.numExperts)
            for try await (expert, block) in group { outputs[expert] = block }
            return outputs
        }
        let output = Combiner.combine(routing, plan: plan, expertOutputs: outputs, hiddenSize: self.spec.hiddenSize)
        return MoELayerResult(output: output, routing: routing)
    }
}
