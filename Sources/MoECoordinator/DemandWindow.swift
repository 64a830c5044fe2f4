import MoECore

/// Rows routed to each expert over a sliding time window: `rate = Σ rows in the last window / window`.
public struct DemandWindow: Sendable {
    public let window: Duration
    private var samples: [ExpertAddress: [(at: ContinuousClock.Instant, rows: Int)]] = [:]
    /// When each expert last had rows routed to it.
    public private(set) var lastDemand: [ExpertAddress: ContinuousClock.Instant] = [:]

    public init(window: Duration) { self.window = window }

    public mutating func record(_ address: ExpertAddress, rows: Int, at now: ContinuousClock.Instant) {
        guard rows > 0 else { return }
        let horizon = now - self.window
        self.samples[address, default: []].removeAll { $0.at < horizon }
        self.samples[address, default: []].append((now, rows))
        self.lastDemand[address] = now
    }

    /// Rows per second routed to `address` over the window ending `now`.
    public func rowsPerSecond(_ address: ExpertAddress, at now: ContinuousClock.Instant) -> Double {
        let horizon = now - self.window
        let rows = self.samples[address]?.reduce(0) { $1.at >= horizon ? $0 + $1.rows : $0 } ?? 0
        return Double(rows) / self.window.seconds
    }
}

/// Co-activation counts (see `Coactivation`) reported over a sliding time window, per layer: the sum of the reports
/// of the last `window`.
public struct CoactivationWindow: Sendable {
    public let window: Duration
    private var reports: [(at: ContinuousClock.Instant, layer: String, counts: Coactivation)] = []

    public init(window: Duration) { self.window = window }

    public mutating func record(layer: String, _ counts: Coactivation, at now: ContinuousClock.Instant) {
        let horizon = now - self.window
        self.reports.removeAll { $0.at < horizon }
        if !counts.isEmpty { self.reports.append((now, layer, counts)) }
    }

    /// Layer → the counts reported within the window ending `now`.
    public func total(at now: ContinuousClock.Instant) -> [String: Coactivation] {
        let horizon = now - self.window
        var total: [String: Coactivation] = [:]
        for report in self.reports where report.at >= horizon {
            total[report.layer, default: Coactivation(experts: report.counts.experts)].merge(report.counts)
        }
        return total
    }
}
