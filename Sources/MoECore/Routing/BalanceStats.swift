import RealModule

/// Load-balance telemetry of routed batches, for one request or aggregated over many.
///
/// With `p_t = softmax(l_t)` and routed slots counted per expert: `f_i = tokens_i / Σ_j tokens_j`,
/// `P_i = mean_t p_{t,i}`, Switch aux loss `E · Σ_i f_i · P_i` (1.0 when balanced), router z-loss
/// `mean_t (logsumexp l_t)²`, balancedness `mean_i tokens_i / max_i tokens_i` (1 when balanced), dropped slots, and
/// dead experts (no tokens).
public struct BalanceStats: Sendable, Equatable {
    public private(set) var tokens: Int = 0
    public private(set) var tokensPerExpert: [Int]
    public private(set) var droppedSlots: Int = 0
    private var probabilitySums: [Double]
    private var zLossSum: Double = 0

    public init(numExperts: Int) {
        self.tokensPerExpert = [Int](repeating: 0, count: numExperts)
        self.probabilitySums = [Double](repeating: 0, count: numExperts)
    }

    /// The statistics of one routed batch.
    public init(logits: Matrix, decision: RoutingDecision) {
        self.init(numExperts: logits.columns)
        self.tokens = logits.rows
        self.tokensPerExpert = decision.tokensPerExpert
        self.droppedSlots = decision.droppedSlots
        for token in 0..<logits.rows {
            let row = logits.row(token)
            let maximum = row.max() ?? 0
            let sum = row.reduce(0.0) { $0 + Double.exp(Double($1 - maximum)) }
            for (index, logit) in row.enumerated() {
                self.probabilitySums[index] += Double.exp(Double(logit - maximum)) / sum
            }
            let logSumExp = Double(maximum) + Double.log(sum)
            self.zLossSum += logSumExp * logSumExp
        }
    }

    public var numExperts: Int { self.tokensPerExpert.count }

    /// Adds another batch's statistics (same number of experts).
    public mutating func merge(_ other: BalanceStats) {
        precondition(other.numExperts == self.numExperts, "balance stats of different layers")
        self.tokens += other.tokens
        self.droppedSlots += other.droppedSlots
        for index in 0..<self.numExperts {
            self.tokensPerExpert[index] += other.tokensPerExpert[index]
            self.probabilitySums[index] += other.probabilitySums[index]
        }
        self.zLossSum += other.zLossSum
    }

    /// `f_i`, `[E]`.
    public var routedFractions: [Double] {
        let total = self.tokensPerExpert.reduce(0, +)
        return self.tokensPerExpert.map { total == 0 ? 0 : Double($0) / Double(total) }
    }

    /// `P_i`, `[E]`.
    public var meanProbabilities: [Double] {
        self.probabilitySums.map { self.tokens == 0 ? 0 : $0 / Double(self.tokens) }
    }

    /// `E · Σ f_i · P_i`.
    public var auxLoss: Double {
        Double(self.numExperts) * zip(self.routedFractions, self.meanProbabilities).reduce(0) { $0 + $1.0 * $1.1 }
    }

    /// `mean_t (logsumexp l_t)²`.
    public var zLoss: Double { self.tokens == 0 ? 0 : self.zLossSum / Double(self.tokens) }

    /// `mean / max` of tokens per expert; 1 when nothing was routed.
    public var balancedness: Double {
        guard let maximum = self.tokensPerExpert.max(), maximum > 0 else { return 1 }
        return Double(self.tokensPerExpert.reduce(0, +)) / Double(self.numExperts) / Double(maximum)
    }

    /// Experts that received no token.
    public var deadExperts: [Int] { self.tokensPerExpert.indices.filter { self.tokensPerExpert[$0] == 0 } }
}
