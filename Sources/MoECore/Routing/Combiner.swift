/// Weighted combination of expert outputs into the layer output.
///
/// `y_t = Σ_{j<k} w_{t,j} · Y_{e_{t,j}}[r_{t,j}] + g_t · S[t] + r_t · x_t`, with `Y_e: [n_e, H]` the output block of
/// routed expert `e`, `r_{t,j}` the slot's row in that block (`DispatchPlan.slotRows`), `S: [T, H]` the shared
/// expert's output and `g_t` its gate (1 when ungated), `r_t` the residual weight of dropped tokens, `y: [T, H]`.
/// Dropped slots add nothing. Terms are summed in that order, so the result does not depend on the order in which
/// expert answers arrive.
public enum Combiner {
    /// The shared expert's contribution: its output for every token and an optional per-token gate.
    public struct SharedTerm: Sendable {
        /// `[T, H]`.
        public let output: Matrix
        /// `[T]`, or nil for an ungated shared expert (DeepSeek).
        public let gate: [Float]?

        public init(output: Matrix, gate: [Float]?) {
            self.output = output
            self.gate = gate
        }
    }

    /// - Parameters:
    ///   - expertOutputs: `[E]`, the output block of every expert with rows (`nil` for the others).
    ///   - hidden: `[T, H]`, needed only when the decision has residual weights.
    public static func combine(
        _ decision: RoutingDecision, plan: DispatchPlan, expertOutputs: [Matrix?], hiddenSize: Int,
        shared: SharedTerm? = nil, hidden: Matrix? = nil
    ) -> Matrix {
        precondition(expertOutputs.count == decision.numExperts, "combine: one output slot per expert")
        var output = Matrix(zeros: decision.tokenCount, hiddenSize)
        output.values.withUnsafeMutableBufferPointer { out in
            func accumulate(_ weight: Float, _ source: [Float], from offset: Int, into destination: Int) {
                source.withUnsafeBufferPointer { rows in
                    for column in 0..<hiddenSize { out[destination + column] += weight * rows[offset + column] }
                }
            }
            for token in 0..<decision.tokenCount {
                let destination = token * hiddenSize
                for slot in (token * decision.topK)..<((token + 1) * decision.topK) where decision.topkIDs[slot] >= 0 {
                    let expert = Int(decision.topkIDs[slot])
                    guard let block = expertOutputs[expert] else {
                        preconditionFailure("combine: expert \(expert) has rows but no output")
                    }
                    precondition(block.columns == hiddenSize, "combine: expert \(expert) output width")
                    accumulate(
                        decision.topkWeights[slot], block.values, from: Int(plan.slotRows[slot]) * hiddenSize,
                        into: destination)
                }
                if let shared {
                    accumulate(shared.gate?[token] ?? 1, shared.output.values, from: destination, into: destination)
                }
                if let residual = decision.residualWeights, residual[token] != 0 {
                    guard let hidden else { preconditionFailure("combine: residual weights need the hidden states") }
                    accumulate(residual[token], hidden.values, from: destination, into: destination)
                }
            }
        }
        return output
    }
}
