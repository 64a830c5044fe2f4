import RealModule

/// What happens to a token's second expert under top-2 gating (GShard; fairseq's `--moe-second-expert-policy`).
/// With `p = softmax(l)` over the unmasked experts, `e₁ = argmax p`, and `w₁ = p₁ / (p₁ + p₂)`,
/// `w₂ = p₂ / (p₁ + p₂)` for the chosen pair:
public enum SecondExpertPolicy: String, Sendable, Equatable, CaseIterable {
    /// `e₂ = argmax_{e ≠ e₁} p`, always kept.
    case all
    /// fairseq's `sampling`: `e₂ = argmax_{e ≠ e₁} (l_e + G_e)`, `G` Gumbel noise seeded by (seed, token, expert);
    /// always kept.
    case sampling
    /// fairseq's `random`: `e₂` as in `all`, kept when `u < 2·w₂` (probability `min(1, 2·w₂)`, `u` uniform, seeded by
    /// (seed, token)); a token that loses it keeps `w₁ = 1` (fairseq normalises after dropping).
    case random
    /// GShard (Lepikhin 2020, Algorithm 1): as `random`, but a token that loses `e₂` keeps `w₁ = p₁ / (p₁ + p₂)`.
    case gshard
}

extension TopKGate {
    /// Top-2 gating under `policy` (see `SecondExpertPolicy`); `masked` experts are never chosen. A dropped second
    /// slot has id `RoutingDecision.dropped` and weight 0.
    func routeTopTwo(_ logits: Matrix, policy: SecondExpertPolicy, seed: UInt64, masked: Set<Int>) -> RoutingDecision {
        var ids = [Int32](), weights = [Float]()
        for token in 0..<logits.rows {
            var raw = self.biased(logits.row(token))
            for expert in masked where expert < raw.count { raw[expert] = -.infinity }
            let p = Self.softmax(raw[...])
            let first = Self.topIndices(of: p, k: 1)[0]
            var rival =
                policy == .sampling
                ? raw.enumerated().map { $1 + SplitMix64.gumbel(seed: seed, token: token, expert: $0) } : p
            rival[first] = -.infinity
            let second = Self.topIndices(of: rival, k: 1)[0]
            let total = p[first] + p[second]
            let (w1, w2) = total > 0 && raw[second] > -.infinity ? (p[first] / total, p[second] / total) : (1, 0)
            var keep = w2 > 0
            if keep && (policy == .random || policy == .gshard) {
                keep = SplitMix64.uniform(seed: seed, token: token, stream: 0x5EC0_4D) < Double(2 * w2)
            }
            ids += [Int32(first), keep ? Int32(second) : RoutingDecision.dropped]
            weights += [keep || policy == .gshard ? w1 : 1, keep ? w2 : 0]
        }
        return RoutingDecision(
            tokenCount: logits.rows, topK: 2, numExperts: self.numExperts, topkIDs: ids, topkWeights: weights)
    }

    /// This gate with a group limit instead of its own (two-level routing: `groups` groups of consecutive experts,
    /// the `keptGroups` best by `groupScore` of their members' selection scores, then this gate's own rule inside
    /// them).
    func limited(to limit: GroupLimit) -> TopKGate {
        TopKGate(
            numExperts: self.numExperts, topK: self.topK, renormalize: self.renormalize, scoring: self.scoring,
            groupLimit: limit, logitBias: self.logitBias, selectionBias: self.selectionBias, weighting: self.weighting,
            scalingFactor: self.scalingFactor)
    }
}

extension SplitMix64 {
    /// A uniform value in (0, 1) for (seed, token, stream).
    public static func uniform(seed: UInt64, token: Int, stream: UInt64) -> Double {
        let bits = mix(seed ^ mix(UInt64(token) &* 0x9E37_79B9 &+ stream &+ 0xA5A5_0000_0000))
        return (Double(bits >> 11) + 0.5) / Double(1 << 53)
    }

    /// Standard Gumbel noise `−log(−log u)` for (seed, token, expert).
    public static func gumbel(seed: UInt64, token: Int, expert: Int) -> Float {
        let u = uniform(seed: seed, token: token, stream: UInt64(expert) &+ 1)
        return Float(-Double.log(-Double.log(u)))
    }
}
