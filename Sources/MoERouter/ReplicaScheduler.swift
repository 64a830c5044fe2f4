import MoECore
import MoEServing
import Synchronization

/// Which replica of an expert gets a call, and when to try another: the one place that decides.
///
/// - **Choice**: among the replicas not ejected, the one with the fewest calls outstanding; ties taken in turn.
/// - **Hedging**: a call not answered within `hedgeDelay(for:rows:)` is sent to a second replica as well; the first
///   answer wins and the other call is cancelled. The delay is learnt per expert and call size (rows rounded up to
///   a power of two): `clamp(p95 of the last 64 latencies × hedgeFactor, hedgeFloor, hedgeCeiling)`, or the ceiling
///   until 16 latencies are known. Hedges are paid from a budget that each call adds `hedgeBudget` to (at most
///   `hedgeBurst` saved): at most 10% more calls than without hedging by default, so a mesh that is slow everywhere
///   is not asked twice as much.
/// - **Ejection** (outlier ejection): a replica that could not be reached (`UNAVAILABLE`, connection lost, its call's
///   own deadline), lost `ejectAfterHedgeLosses` hedges in a row (it answers far slower than its peers: hung,
///   partitioned), or left a call unanswered for `stallTimeout` (`stallFactor` × the hedge delay, at least
///   `stallFloor`: what catches a hung replica when no hedge could be sent), leaves this router's choice at once, for `ejectionTime`, doubled each time it is ejected again
///   within `maxEjectionTime`; its calls in flight move to another replica. A replica is tried again when its
///   ejection ends. When every replica of an expert is ejected, the one whose ejection ends first is still used.
/// - **Departures**: calls in flight at a replica that left the topology (the coordinator dropped it, or it was
///   ejected) are ended here and sent to another replica, not left waiting for their deadline.
public final class ReplicaScheduler: Sendable {
    public struct Configuration: Sendable, Equatable {
        /// Send slow calls to a second replica.
        public var hedging: Bool
        public var hedgeFactor: Double
        public var hedgeFloor: Duration
        public var hedgeCeiling: Duration
        /// Hedges allowed per call (0.1: at most 10% extra calls), and the most saved up.
        public var hedgeBudget: Double
        public var hedgeBurst: Double
        public var ejectAfterHedgeLosses: Int
        public var stallFactor: Double
        public var stallFloor: Duration
        public var ejectionTime: Duration
        public var maxEjectionTime: Duration

        public init(
            hedging: Bool = true, hedgeFactor: Double = 2, hedgeFloor: Duration = .milliseconds(5),
            hedgeCeiling: Duration = .milliseconds(250), hedgeBudget: Double = 0.1, hedgeBurst: Double = 10,
            ejectAfterHedgeLosses: Int = 3, stallFactor: Double = 10, stallFloor: Duration = .seconds(5),
            ejectionTime: Duration = .seconds(1), maxEjectionTime: Duration = .seconds(30)
        ) {
            self.hedging = hedging
            self.hedgeFactor = hedgeFactor
            self.hedgeFloor = hedgeFloor
            self.hedgeCeiling = max(hedgeFloor, hedgeCeiling)
            self.hedgeBudget = max(0, hedgeBudget)
            self.hedgeBurst = max(1, hedgeBurst)
            self.ejectAfterHedgeLosses = max(1, ejectAfterHedgeLosses)
            self.stallFactor = max(1, stallFactor)
            self.stallFloor = stallFloor
            self.ejectionTime = ejectionTime
            self.maxEjectionTime = max(ejectionTime, maxEjectionTime)
        }
    }

    /// A replica this router stopped choosing, and why (reported to the coordinator).
    public struct Ejection: Sendable, Equatable {
        public let endpoint: ServiceEndpoint
        public let reason: String
        public let duration: Duration
    }

    /// Latencies kept per expert and size class.
    static let window = 64
    /// Latencies needed before the learnt delay is used.
    static let minimumSamples = 16

    private struct SizeClass: Hashable {
        let address: ExpertAddress
        let rowsLog2: Int
    }

    private struct Health {
        var hedgeLosses = 0
        var ejectedUntil: ContinuousClock.Instant?
        var ejections = 0
        var lastEjection: ContinuousClock.Instant?
    }

    private struct State {
        var outstanding: [ServiceEndpoint: Int] = [:]
        var health: [ServiceEndpoint: Health] = [:]
        var latencies: [SizeClass: [Double]] = [:]
        var turn: [ExpertAddress: Int] = [:]
        var budget: Double
        var unreported: [Ejection] = []
        var calls = 0
        var hedges = 0
    }

    public let configuration: Configuration
    private let onEjection: @Sendable (Ejection) -> Void
    private let state: Mutex<State>
    /// Signalled with a replica that leaves this router's choice: its calls in flight end and go elsewhere.
    private let departures = KeyedSignal<ServiceEndpoint>()
    private let clock: @Sendable () -> ContinuousClock.Instant

    /// `onEjection` hears of each ejection as it happens (logs, metrics).
    public init(
        configuration: Configuration = Configuration(), onEjection: @escaping @Sendable (Ejection) -> Void = { _ in },
        clock: @escaping @Sendable () -> ContinuousClock.Instant = { .now }
    ) {
        self.configuration = configuration
        self.onEjection = onEjection
        self.clock = clock
        self.state = Mutex(State(budget: configuration.hedgeBurst))
    }

    // MARK: Choice

    /// `replicas` best first: not ejected before ejected (those by the end of their ejection), then fewest calls
    /// outstanding, ties in turn.
    public func order(_ replicas: [ExpertReplica], for address: ExpertAddress) -> [ExpertReplica] {
        guard replicas.count > 1 else { return replicas }
        let now = self.clock()
        return self.state.withLock { state in
            let turn = state.turn[address, default: 0]
            state.turn[address] = turn &+ 1
            let rotated = (0..<replicas.count).map { replicas[(turn + $0) % replicas.count] }
            // A stable sort keeps the rotation among equals.
            return rotated.enumerated().sorted { a, b in
                let endA = state.health[a.element.endpoint]?.ejectedUntil.flatMap { $0 > now ? $0 : nil }
                let endB = state.health[b.element.endpoint]?.ejectedUntil.flatMap { $0 > now ? $0 : nil }
                if (endA == nil) != (endB == nil) { return endA == nil }
                if let endA, let endB, endA != endB { return endA < endB }
                let loadA = state.outstanding[a.element.endpoint, default: 0]
                let loadB = state.outstanding[b.element.endpoint, default: 0]
                return loadA != loadB ? loadA < loadB : a.offset < b.offset
            }.map(\.element)
        }
    }

    /// Calls outstanding at `endpoint` now.
    public func outstanding(_ endpoint: ServiceEndpoint) -> Int {
        self.state.withLock { $0.outstanding[endpoint, default: 0] }
    }

    /// Whether `endpoint` is ejected now.
    public func isEjected(_ endpoint: ServiceEndpoint) -> Bool {
        let now = self.clock()
        return self.state.withLock { ($0.health[endpoint]?.ejectedUntil).map { $0 > now } ?? false }
    }

    // MARK: Calls

    public func callStarted(_ endpoint: ServiceEndpoint) {
        self.state.withLock { state in
            state.outstanding[endpoint, default: 0] += 1
            state.calls += 1
            state.budget = min(self.configuration.hedgeBurst, state.budget + self.configuration.hedgeBudget)
        }
    }

    /// A call of `rows` rows to `address` answered after `latency`: learnt for the hedge delay; the replica is
    /// healthy again.
    public func callSucceeded(_ endpoint: ServiceEndpoint, address: ExpertAddress, rows: Int, latency: Duration) {
        self.callSucceeded(endpoint, experts: [(address, rows)], latency: latency)
    }

    /// A call carrying several experts' rows answered after `latency`: learnt for each expert's hedge delay at its
    /// size (a conservative figure: the message was as slow as all its parts together).
    public func callSucceeded(
        _ endpoint: ServiceEndpoint, experts: [(address: ExpertAddress, rows: Int)], latency: Duration
    ) {
        self.state.withLock { state in
            state.outstanding[endpoint, default: 1] -= 1
            state.health[endpoint, default: Health()].hedgeLosses = 0
            for (address, rows) in experts {
                let key = SizeClass(address: address, rowsLog2: Self.sizeClass(rows))
                var samples = state.latencies[key, default: []]
                if samples.count == Self.window { samples.removeFirst() }
                samples.append(latency.seconds)
                state.latencies[key] = samples
            }
        }
    }

    /// A call that ended without an answer: cancelled (a hedge won, the client left) or failed.
    /// `unreachable`: the replica could not be reached; it is ejected with `reason`.
    public func callEnded(_ endpoint: ServiceEndpoint, unreachable reason: String? = nil) {
        let ejection = self.state.withLock { state -> Ejection? in
            state.outstanding[endpoint, default: 1] -= 1
            guard let reason else { return nil }
            return self.eject(endpoint, reason: reason, in: &state)
        }
        self.ejected(ejection)
    }

    /// The hedge sent beside a call to `endpoint` answered first: `endpoint` is slower than its peers. After
    /// `ejectAfterHedgeLosses` in a row it is ejected.
    public func hedgeWon(against endpoint: ServiceEndpoint) {
        let ejection = self.state.withLock { state -> Ejection? in
            state.health[endpoint, default: Health()].hedgeLosses += 1
            let losses = state.health[endpoint]!.hedgeLosses
            guard losses >= self.configuration.ejectAfterHedgeLosses else { return nil }
            return self.eject(endpoint, reason: "\(losses) hedges in a row answered before it", in: &state)
        }
        self.ejected(ejection)
    }

    /// A call to `endpoint` has had no answer for `waited` (its stall timeout): the replica is ejected, and its
    /// calls in flight go elsewhere.
    public func callStalled(_ endpoint: ServiceEndpoint, waited: Duration) {
        let ejection = self.state.withLock { state in
            self.eject(endpoint, reason: "no answer within \(DecimalFormat.milliseconds(waited)) ms", in: &state)
        }
        self.ejected(ejection)
    }

    private func ejected(_ ejection: Ejection?) {
        guard let ejection else { return }
        self.departures.signal(ejection.endpoint)
        self.onEjection(ejection)
    }

    /// Ejects `endpoint` unless it is ejected already.
    private func eject(_ endpoint: ServiceEndpoint, reason: String, in state: inout State) -> Ejection? {
        let now = self.clock()
        var health = state.health[endpoint, default: Health()]
        if let until = health.ejectedUntil, until > now { return nil }
        // Ejected again soon after the last one: back off longer.
        let repeated = health.lastEjection.map { now - $0 < self.configuration.maxEjectionTime } ?? false
        health.ejections = repeated ? health.ejections + 1 : 1
        let duration = min(
            self.configuration.ejectionTime * (1 << min(health.ejections - 1, 16)), self.configuration.maxEjectionTime)
        health.ejectedUntil = now + duration
        health.lastEjection = now
        health.hedgeLosses = 0
        state.health[endpoint] = health
        let ejection = Ejection(endpoint: endpoint, reason: reason, duration: duration)
        state.unreported.append(ejection)
        return ejection
    }

    // MARK: Hedging

    /// How long a call of `rows` rows to `address` waits before a hedge; nil when hedging is off.
    public func hedgeDelay(for address: ExpertAddress, rows: Int) -> Duration? {
        guard self.configuration.hedging else { return nil }
        return self.learntDelay(for: address, rows: rows) ?? self.configuration.hedgeCeiling
    }

    /// `clamp(p95 × hedgeFactor, floor, ceiling)` of the expert's recent latencies for calls of this size; nil
    /// until `minimumSamples` are known.
    private func learntDelay(for address: ExpertAddress, rows: Int) -> Duration? {
        let samples = self.state.withLock {
            $0.latencies[SizeClass(address: address, rowsLog2: Self.sizeClass(rows))] ?? []
        }
        guard samples.count >= Self.minimumSamples else { return nil }
        let sorted = samples.sorted()
        let p95 = sorted[min(sorted.count - 1, Int((Double(sorted.count) * 0.95).rounded(.up)) - 1)]
        let delay = Duration.seconds(p95 * self.configuration.hedgeFactor)
        return min(max(delay, self.configuration.hedgeFloor), self.configuration.hedgeCeiling)
    }

    /// How long a call of `rows` rows to `address` may go unanswered before its replica is taken for hung.
    public func stallTimeout(for address: ExpertAddress, rows: Int) -> Duration {
        let hedged = self.learntDelay(for: address, rows: rows) ?? self.configuration.hedgeCeiling
        return max(hedged * self.configuration.stallFactor, self.configuration.stallFloor)
    }

    /// Takes one hedge from the budget, if there is one.
    public func takeHedge() -> Bool {
        self.state.withLock { state in
            guard state.budget >= 1 else { return false }
            state.budget -= 1
            state.hedges += 1
            return true
        }
    }

    // MARK: Departures

    /// Replicas that left the topology: their calls in flight end here (and go elsewhere).
    public func replicasLeft(_ endpoints: Set<ServiceEndpoint>) {
        for endpoint in endpoints { self.departures.signal(endpoint) }
    }

    /// `operation`'s result, or nil when `endpoint` leaves this router's choice first (ejected, or gone from the
    /// topology); the operation is then cancelled.
    public func unlessDeparting<Result: Sendable>(
        _ endpoint: ServiceEndpoint, _ operation: @escaping @Sendable () async throws -> Result
    ) async throws -> Result? {
        try await self.departures.run(unless: endpoint, operation)
    }

    /// Calls started (hedges included) and hedges sent, since start.
    public var statistics: (calls: Int, hedges: Int) { self.state.withLock { ($0.calls, $0.hedges) } }

    /// Ejections since the previous call (for the coordinator).
    public func takeEjections() -> [Ejection] {
        self.state.withLock { state in
            defer { state.unreported = [] }
            return state.unreported
        }
    }

    /// ⌈log2 rows⌉.
    static func sizeClass(_ rows: Int) -> Int {
        rows <= 1 ? 0 : Int.bitWidth - (rows - 1).leadingZeroBitCount
    }
}
