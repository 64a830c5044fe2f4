import RealModule

/// The softmax top-k gate of Mixtral, Qwen-MoE and OLMoE.
///
/// For one token with router logits `l = W_r · x` (`[E]`):
/// `p = softmax(l)`; `S = top-k(p)` (ties: lower expert index); `w = p_S`, or `w = p_S / Σ p_S` when
/// `renormalize` (Mixtral always; Qwen/OLMoE iff `norm_topk_prob`). All in f32.
public struct TopKGate: Sendable, Equatable {
    public let numExperts: Int
    public let topK: Int
    public let renormalize: Bool

    public init(numExperts: Int, topK: Int, renormalize: Bool) {
        precondition(numExperts > 0, "a gate needs at least one expert")
        precondition((1...numExperts).contains(topK), "top-k must be in 1...\(numExperts), got \(topK)")
        self.numExperts = numExperts
        self.topK = topK
        self.renormalize = renormalize
    }

    /// Routes T tokens from their logits `[T, E]`.
    public func route(logits: Matrix) -> RoutingDecision {
        precondition(logits.columns == self.numExperts, "logits: expected \(self.numExperts) columns")
        let k = self.topK
        var ids = [Int32](repeating: 0, count: logits.rows * k)
        var weights = [Float](repeating: 0, count: logits.rows * k)
        var probabilities = [Float](repeating: 0, count: self.numExperts)
        for token in 0..<logits.rows {
            Self.softmax(logits.row(token), into: &probabilities)
            let selected = Self.topIndices(of: probabilities, k: k)
            var selectedSum: Float = 0
            for (slot, expert) in selected.enumerated() {
                ids[token * k + slot] = Int32(expert)
                weights[token * k + slot] = probabilities[expert]
                selectedSum += probabilities[expert]
            }
            if self.renormalize {
                for slot in 0..<k { weights[token * k + slot] /= selectedSum }
            }
        }
        return RoutingDecision(
            tokenCount: logits.rows, topK: k, numExperts: self.numExperts, topkIDs: ids, topkWeights: weights)
    }

    /// `p_i = exp(l_i − max l) / Σ_j exp(l_j − max l)`.
    static func softmax(_ logits: ArraySlice<Float>, into probabilities: inout [Float]) {
        let maximum = logits.max() ?? 0
        var sum: Float = 0
        for (index, logit) in logits.enumerated() {
            let value = Float.exp(logit - maximum)
            probabilities[index] = value
            sum += value
        }
        for index in probabilities.indices { probabilities[index] /= sum }
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
