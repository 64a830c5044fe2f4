/// The weights of one expert FFN, in f32, in the layout of the checkpoints (`W · x`, W: `[out, in]`).
public enum ExpertWeights: Sendable, Equatable {
    /// Gated FFN (SwiGLU when the activation is silu): `y = W_down · (act(W_gate · x) ⊙ (W_up · x))`.
    /// gate, up: `[I, H]`; down: `[H, I]`. Mixtral calls them w1, w3, w2.
    case gated(gate: Matrix, up: Matrix, down: Matrix, activation: Activation)
    /// Plain FFN: `y = W_out · act(W_in · x)`. in: `[I, H]`; out: `[H, I]`. Switch calls them wi, wo.
    case plain(input: Matrix, output: Matrix, activation: Activation)
    /// GPT-OSS's clamped SwiGLU with biases: `g = min(W_gate x + b_g, lim)`, `u = clamp(W_up x + b_u, −lim, lim)`,
    /// `y = W_down · ((u + 1) ⊙ g · σ(α g)) + b_d`. gate, up: `[I, H]`; down: `[H, I]`; biases `[I]`, `[I]`, `[H]`.
    case clampedSwiGLU(
        gate: Matrix, up: Matrix, down: Matrix, gateBias: [Float], upBias: [Float], downBias: [Float], limit: Float,
        alpha: Float)

    /// H, the width of the rows the expert takes and gives.
    public var hiddenSize: Int {
        switch self {
        case .gated(let gate, _, _, _), .clampedSwiGLU(let gate, _, _, _, _, _, _, _): gate.columns
        case .plain(let input, _, _): input.columns
        }
    }

    /// I, the expert's intermediate width.
    public var intermediateSize: Int {
        switch self {
        case .gated(let gate, _, _, _), .clampedSwiGLU(let gate, _, _, _, _, _, _, _): gate.rows
        case .plain(let input, _, _): input.rows
        }
    }

    /// Checks that the matrices fit together: returns a message naming the mismatch, or nil.
    public var shapeProblem: String? {
        switch self {
        case .clampedSwiGLU(let gate, let up, let down, let gateBias, let upBias, let downBias, _, _):
            if let problem = Self.gatedShapeProblem(gate: gate, up: up, down: down) { return problem }
            if gateBias.count != gate.rows || upBias.count != gate.rows {
                return "gate/up bias: expected \(gate.rows) values, got \(gateBias.count) and \(upBias.count)"
            }
            if downBias.count != gate.columns {
                return "down bias: expected \(gate.columns) values, got \(downBias.count)"
            }
        case .gated(let gate, let up, let down, _):
            if let problem = Self.gatedShapeProblem(gate: gate, up: up, down: down) { return problem }
        case .plain(let input, let output, _):
            if output.rows != input.columns || output.columns != input.rows {
                return
                    "output projection: expected [\(input.columns), \(input.rows)], got [\(output.rows), \(output.columns)]"
            }
        }
        return nil
    }

    private static func gatedShapeProblem(gate: Matrix, up: Matrix, down: Matrix) -> String? {
        if up.rows != gate.rows || up.columns != gate.columns {
            return "up projection: expected [\(gate.rows), \(gate.columns)], got [\(up.rows), \(up.columns)]"
        }
        if down.rows != gate.columns || down.columns != gate.rows {
            return "down projection: expected [\(gate.columns), \(gate.rows)], got [\(down.rows), \(down.columns)]"
        }
        return nil
    }
}
