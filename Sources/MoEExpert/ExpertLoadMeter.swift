import MoECore
import MoEProto
import Synchronization

/// An expert service's load, as its heartbeats report it: rows in flight now; rows per second and call latency
/// percentiles over the last `window` (the coordinator's demand window), so that light or bursty traffic shows what
/// it was rather than the zeros of a heartbeat interval without a call; and, since the previous snapshot, the rows
/// served per expert (the coordinator adds these deltas into its own window).
public final class ExpertLoadMeter: Sendable {
    private struct State {
        var inFlightRows = 0
        /// Rows per expert since the previous snapshot.
        var rows: [ExpertAddress: Int] = [:]
        /// Calls that ended within the window: when, rows, latency; oldest first.
        var recent: [(at: ContinuousClock.Instant, rows: Int, latencyMs: Double)] = []
        var cancelledCalls = 0
    }

    /// Most calls kept per window; beyond, the oldest are dropped.
    static let latencySamples = 4096

    /// How far back rows per second and latencies reach.
    public let window: Duration
    private let started = ContinuousClock.now
    private let state = Mutex(State())
    /// Announced when the rows in flight or the cancelled calls change.
    public let changes = StateChanges()

    public init(window: Duration = .seconds(5)) { self.window = window }

    public var inFlightRows: Int { self.state.withLock { $0.inFlightRows } }

    /// Calls whose caller left (cancelled, or past its deadline) before the expert ran them, since start.
    public var cancelledCalls: Int { self.state.withLock { $0.cancelledCalls } }

    public func cancelled() {
        self.state.withLock { $0.cancelledCalls += 1 }
        self.changes.changed()
    }

    public func begin(rows: Int) {
        self.state.withLock { $0.inFlightRows += rows }
        self.changes.changed()
    }

    public func end(_ address: ExpertAddress, rows: Int, started: ContinuousClock.Instant) {
        let now = ContinuousClock.now
        let latency = (now - started).milliseconds
        self.state.withLock { state in
            state.inFlightRows -= rows
            state.rows[address, default: 0] += rows
            // Full: the oldest quarter goes at once, so that a busy expert moves the array once per 1,024 calls, not
            // on every call.
            if state.recent.count >= Self.latencySamples { state.recent.removeFirst(Self.latencySamples / 4) }
            state.recent.append((now, rows, latency))
        }
        self.changes.changed()
    }

    /// The load now: rows per second and latencies over the window (`rows in it / min(window, uptime)`; 0 and no
    /// latencies when no call ended in it), rows per expert since the previous snapshot (which this one ends);
    /// `experts` orders `rows_per_expert`.
    public func snapshot(experts: [ExpertAddress]) -> Moemesh_V1_ReplicaLoad {
        let now = ContinuousClock.now
        let (inFlight, rows, recent) = self.state.withLock { state in
            state.recent.removeAll { now - $0.at > self.window }
            defer { state.rows = [:] }
            return (state.inFlightRows, state.rows, state.recent)
        }
        var load = Moemesh_V1_ReplicaLoad()
        load.inFlightRows = Int64(inFlight)
        let seconds = min(self.window, now - self.started).seconds
        load.rowsPerSecond = seconds > 0 ? Double(recent.reduce(0) { $0 + $1.rows }) / seconds : 0
        let sorted = recent.map(\.latencyMs).sorted()
        if !sorted.isEmpty {
            load.latencyP50Ms = sorted[(sorted.count - 1) / 2]
            load.latencyP99Ms = sorted[min(sorted.count - 1, Int((Double(sorted.count) * 0.99).rounded(.up)) - 1)]
        }
        load.rowsPerExpert = experts.map { Int64(rows[$0] ?? 0) }
        return load
    }
}
