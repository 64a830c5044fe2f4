/// Weighted combination of expert outputs into the layer output.
///
/// `y_t = Σ_{j<k} w_{t,j} · Y_{e_{t,j}}[r_{t,j}]` with `Y_e: [n_e, H]` the output block of expert `e`, `r` the
/// slot's row in that block (`DispatchPlan.slotRows`) and `y: [T, H]`. Slots are summed in order `j = 0 ..< k`,
/// so the result does not depend on the order in which expert answers arrive.
public enum Combiner {
    /// - Parameter expertOutputs: `[E]`, the output block of every expert with rows (`nil` for the others).
    public static func combine(
        _ decision: RoutingDecision, plan: DispatchPlan, expertOutputs: [Matrix?], hiddenSize: Int
    ) -> Matrix {
        precondition(expertOutputs.count == decision.numExperts, "combine: one output slot per expert")
        var output = Matrix(zeros: decision.tokenCount, hiddenSize)
        output.values.withUnsafeMutableBufferPointer { out in
            for token in 0..<decision.tokenCount {
                let destination = token * hiddenSize
                for slot in (token * decision.topK)..<((token + 1) * decision.topK) {
                    let expert = Int(decision.topkIDs[slot])
                    guard let block = expertOutputs[expert] else {
                        preconditionFailure("combine: expert \(expert) has rows but no output")
                    }
                    precondition(block.columns == hiddenSize, "combine: expert \(expert) output width")
                    let weight = decision.topkWeights[slot]
                    let source = Int(plan.slotRows[slot]) * hiddenSize
                    block.values.withUnsafeBufferPointer { rows in
                        for column in 0..<hiddenSize {
                            out[destination + column] += weight * rows[source + column]
                        }
                    }
                }
            }
        }
        return output
    }
}
