import MoECore
import MoEProto
import Synchronization

/// An expert service's load, as its heartbeats report it: rows in flight now, and since the previous snapshot the
/// rows served (in all and per expert), rows per second and call latency percentiles.
public final class ExpertLoadMeter: Sendable {
    private struct State {
        var inFlightRows = 0
        var rows: [ExpertAddress: Int] = [:]
        var latenciesMs: [Double] = []
        var since = ContinuousClock.now
        var cancelledCalls = 0
    }

    /// Latencies kept per window; beyond, the oldest are dropped.
    static let latencySamples = 4096

    private let state = Mutex(State())
    /// Announced when the rows in flight or the cancelled calls change.
    public let changes = StateChanges()

    public init() {}

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
        let latency = (ContinuousClock.now - started).milliseconds
        self.state.withLock { state in
            state.inFlightRows -= rows
            state.rows[address, default: 0] += rows
            if state.latenciesMs.count >= Self.latencySamples { state.latenciesMs.removeFirst() }
            state.latenciesMs.append(latency)
        }
        self.changes.changed()
    }

    /// The load since the previous snapshot (which starts a new window); `experts` orders `rows_per_expert`.
    public func snapshot(experts: [ExpertAddress]) -> Moemesh_V1_ReplicaLoad {
        let now = ContinuousClock.now
        let state = self.state.withLock { state in
            defer {
                state.rows = [:]
                state.latenciesMs = []
                state.since = now
            }
            return state
        }
        var load = Moemesh_V1_ReplicaLoad()
        load.inFlightRows = Int64(state.inFlightRows)
        let total = state.rows.values.reduce(0, +)
        let seconds = (now - state.since).seconds
        load.rowsPerSecond = seconds > 0 ? Double(total) / seconds : 0
        let sorted = state.latenciesMs.sorted()
        if !sorted.isEmpty {
            load.latencyP50Ms = sorted[(sorted.count - 1) / 2]
            load.latencyP99Ms = sorted[min(sorted.count - 1, Int((Double(sorted.count) * 0.99).rounded(.up)) - 1)]
        }
        load.rowsPerExpert = experts.map { Int64(state.rows[$0] ?? 0) }
        return load
    }
}
