import MoECore

/// Where a simulated token's experts come from.
public enum TokenRouting: Sendable, Equatable {
    /// Per layer, expert popularity by Zipf rank `r` (∝ `1 / (r + 1)^exponent`) over a seeded shuffle of the experts.
    /// A token's first expert is drawn by popularity; each next one, with probability `affinity`, from the first's
    /// *team* (a seeded partition of the experts into teams of `teamSize`, hidden from the planner, which has to find
    /// them in the co-activation counts), else by popularity.
    case zipf(exponent: Double, affinity: Double, teamSize: Int)
    /// Recorded telemetry: per layer, rows per expert and co-activation counts (`moemesh status --json`). The first
    /// expert ∝ demand; each next one ∝ the sum of its co-activation counts with those already chosen (∝ demand when
    /// they have none).
    case recorded([RecordedLayer])

    public struct RecordedLayer: Sendable, Equatable {
        public var demand: [Double]
        public var coactivation: Coactivation

        public init(demand: [Double], coactivation: Coactivation) {
            self.demand = demand
            self.coactivation = coactivation
        }
    }
}

/// Draws the experts of one layer's tokens under a `TokenRouting`.
struct TokenSampler {
    let experts: Int
    let topK: Int
    /// Cumulative popularity, for the first expert (and the Zipf fallback).
    private let cumulative: [Double]
    private let affinity: Double
    /// Zipf: each expert's team and the teams' members.
    private let teamOf: [Int]
    private let teams: [[Int]]
    /// Recorded: each expert's co-activated partners and counts.
    private let partners: [[(expert: Int, count: Double)]]

    init(routing: TokenRouting, layer: Int, experts: Int, topK: Int, seed: UInt64) {
        self.experts = experts
        self.topK = min(topK, experts)
        var random = SplitMix64.Generator(seed: seed ^ SplitMix64.mix(UInt64(layer) &+ 0x51_4D))
        var weights: [Double]
        switch routing {
        case .zipf(let exponent, let affinity, let teamSize):
            let ranks = Array(0..<experts).shuffled(using: &random)
            weights = ranks.map { 1 / Double.pow(Double($0 + 1), exponent) }
            let members = Array(0..<experts).shuffled(using: &random)
            let size = max(1, teamSize)
            self.teams = stride(from: 0, to: experts, by: size).map { Array(members[$0..<min($0 + size, experts)]) }
            var teamOf = [Int](repeating: 0, count: experts)
            for (team, experts) in self.teams.enumerated() { for expert in experts { teamOf[expert] = team } }
            self.teamOf = teamOf
            self.affinity = affinity
            self.partners = []
        case .recorded(let layers):
            let recorded = layers[layer % layers.count]
            weights = (0..<experts).map { $0 < recorded.demand.count ? max(0, recorded.demand[$0]) : 0 }
            if weights.allSatisfy({ $0 == 0 }) { weights = [Double](repeating: 1, count: experts) }
            var partners = [[(expert: Int, count: Double)]](repeating: [], count: experts)
            for (cell, count) in recorded.coactivation.counts {
                let (a, b) = (cell / recorded.coactivation.experts, cell % recorded.coactivation.experts)
                guard a < experts, b < experts else { continue }
                partners[a].append((b, Double(count)))
                partners[b].append((a, Double(count)))
            }
            self.partners = partners
            self.teamOf = []
            self.teams = []
            self.affinity = 0
        }
        var running = 0.0
        self.cumulative = weights.map {
            running += $0
            return running
        }
    }

    /// One expert by popularity.
    func popular(_ random: inout SplitMix64.Generator) -> Int {
        let draw = random.unit() * self.cumulative[self.experts - 1]
        var low = 0, high = self.experts - 1
        while low < high {
            let middle = (low + high) / 2
            if self.cumulative[middle] > draw { high = middle } else { low = middle + 1 }
        }
        return low
    }

    /// The `topK` distinct experts of one token, into `chosen` (cleared first).
    func token(_ random: inout SplitMix64.Generator, into chosen: inout [Int]) {
        chosen.removeAll(keepingCapacity: true)
        let first = self.popular(&random)
        chosen.append(first)
        while chosen.count < self.topK {
            var next = self.partners.isEmpty ? self.teamMate(of: first, &random) : self.partner(of: chosen, &random)
            var tries = 0
            while next == nil || chosen.contains(next!) {
                next = tries < 16 ? self.popular(&random) : (0..<self.experts).first { !chosen.contains($0) }
                tries += 1
            }
            chosen.append(next!)
        }
    }

    /// Zipf: with probability `affinity`, another member of `first`'s team.
    private func teamMate(of first: Int, _ random: inout SplitMix64.Generator) -> Int? {
        let team = self.teams[self.teamOf[first]]
        guard team.count > 1, random.unit() < self.affinity else { return nil }
        let pick = team[Int(random.next() % UInt64(team.count - 1))]
        return pick == first ? team[team.count - 1] : pick
    }

    /// Recorded: ∝ co-activation counts with the experts chosen so far (nil when they have none left).
    private func partner(of chosen: [Int], _ random: inout SplitMix64.Generator) -> Int? {
        var total = 0.0
        for expert in chosen {
            for partner in self.partners[expert] where !chosen.contains(partner.expert) { total += partner.count }
        }
        guard total > 0 else { return nil }
        var draw = random.unit() * total
        for expert in chosen {
            for partner in self.partners[expert] where !chosen.contains(partner.expert) {
                draw -= partner.count
                if draw < 0 { return partner.expert }
            }
        }
        return nil
    }
}
