import GRPCCore
import MoECore
import Synchronization

/// Admission under overload: a call is refused at once (`RESOURCE_EXHAUSTED`, saying why) when the calls already in
/// flight would make it miss its deadline, or when the request bytes they hold would pass a budget — instead of
/// queueing it to wait out its deadline, and instead of holding unbounded memory.
///
/// Model: the service shares its capacity among the calls in flight (processor sharing), so a call admitted behind
/// `n` others takes about `(n + 1) × w`, where `w`, the service's time per call, is learnt from every admitted call
/// as it ends (one that failed or ran out of time took the service's time too): a call of latency `L` that saw on average `c̄ = ∫ inFlight dt / L` calls in flight took `w = L / c̄`,
/// averaged with weight 1/16. A call is admitted when `(n + 1) × w ≤ headroom × time left` (`headroom` < 1 leaves
/// slack for error in the estimate), and always when none is in flight, or it has no deadline (then only the byte
/// budget bounds it). Memory: the request bytes of admitted calls stay within `maxInFlightBytes` (a call alone is
/// admitted whatever its size: the message limit bounds it).
public final class LoadShedder: Sendable {
    public struct Configuration: Sendable {
        /// The share of a call's time left that the calls ahead of it may take.
        public var headroom: Double = 0.5
        /// Request bytes that admitted calls may hold together.
        public var maxInFlightBytes: Int = 512 << 20

        public init(headroom: Double = 0.5, maxInFlightBytes: Int = 512 << 20) {
            self.headroom = headroom
            self.maxInFlightBytes = maxInFlightBytes
        }
    }

    /// One admitted call; handed back to `finished`.
    public struct Admission: Sendable {
        let started: ContinuousClock.Instant
        let areaAtStart: Double
        let bytes: Int
    }

    private struct State {
        var inFlight = 0
        var bytes = 0
        /// ∫ inFlight dt, in call-seconds, up to `lastChange`.
        var area = 0.0
        var lastChange: ContinuousClock.Instant
        /// w, seconds per call; nil until a call ended.
        var perCall: Double?
        var refused = 0

        mutating func advance(to now: ContinuousClock.Instant) {
            self.area += Double(self.inFlight) * (now - self.lastChange).seconds
            self.lastChange = now
        }
    }

    public let configuration: Configuration
    /// "router", "expert": named in refusals.
    public let service: String
    private let state: Mutex<State>
    private let clock: @Sendable () -> ContinuousClock.Instant

    /// `clock`: now (tests pass their own).
    public init(
        service: String, configuration: Configuration = Configuration(),
        clock: @escaping @Sendable () -> ContinuousClock.Instant = { .now }
    ) {
        self.service = service
        self.configuration = configuration
        self.clock = clock
        self.state = Mutex(State(lastChange: clock()))
    }

    /// Admits a call holding `bytes` of request, due by `deadline`, or refuses it at once.
    public func admit(bytes: Int, deadline: ContinuousClock.Instant?) throws(Overloaded) -> Admission {
        let now = self.clock()
        return try self.state.withLock { state throws(Overloaded) -> Admission in
            if state.inFlight > 0 {
                if state.bytes + bytes > self.configuration.maxInFlightBytes {
                    state.refused += 1
                    throw Overloaded(
                        service: self.service,
                        reason:
                            "the requests in flight (\(Self.calls(state.inFlight))) hold \(state.bytes >> 20) MiB, and "
                            + "this call's \(Self.mebibytes(bytes)) MiB would pass the limit of "
                            + "\(self.configuration.maxInFlightBytes >> 20) MiB (--max-inflight-mib)")
                }
                if let deadline, let perCall = state.perCall {
                    let expected = Double(state.inFlight + 1) * perCall
                    let left = (deadline - now).seconds
                    if expected > self.configuration.headroom * left {
                        state.refused += 1
                        throw Overloaded(
                            service: self.service,
                            reason:
                                "behind the \(Self.calls(state.inFlight)) in flight (about "
                                + "\(Self.milliseconds(perCall)) ms each) it would take about "
                                + "\(Self.milliseconds(expected)) ms, more than \(self.configuration.headroom) × the "
                                + "\(Self.milliseconds(max(0, left))) ms left before its deadline")
                    }
                }
            }
            state.advance(to: now)
            state.inFlight += 1
            state.bytes += bytes
            return Admission(started: now, areaAtStart: state.area, bytes: bytes)
        }
    }

    /// The call `admission` admitted ended (answered or not): it teaches the time per call.
    public func finished(_ admission: Admission) {
        let now = self.clock()
        self.state.withLock { state in
            state.advance(to: now)
            state.inFlight -= 1
            state.bytes -= admission.bytes
            let latency = (now - admission.started).seconds
            let area = state.area - admission.areaAtStart
            guard latency > 0, area > 0 else { return }
            // L / c̄ = L² / ∫ inFlight dt.
            let sample = latency * latency / area
            state.perCall = state.perCall.map { $0 + (sample - $0) / 16 } ?? sample
        }
    }

    /// Runs `body` as an admitted call (refused at once when overloaded), under the task's deadline.
    public func run<Result: Sendable>(bytes: Int, _ body: () async throws -> Result) async throws -> Result {
        let admission = try self.admit(bytes: bytes, deadline: RequestDeadline.current)
        do {
            let result = try await body()
            self.finished(admission)
            return result
        } catch {
            self.finished(admission)
            throw error
        }
    }

    /// Calls in flight, the bytes they hold, the learnt time per call and the calls refused so far.
    public var snapshot: (inFlight: Int, bytes: Int, perCall: Duration?, refused: Int) {
        self.state.withLock { state in
            (state.inFlight, state.bytes, state.perCall.map { .microseconds(Int64($0 * 1e6)) }, state.refused)
        }
    }

    private static func milliseconds(_ seconds: Double) -> String {
        let ms = seconds * 1000
        return ms < 10 ? "\((ms * 10).rounded() / 10)" : "\(Int(ms.rounded()))"
    }

    private static func calls(_ count: Int) -> String { count == 1 ? "1 call" : "\(count) calls" }

    private static func mebibytes(_ bytes: Int) -> String {
        bytes < 1 << 20 ? "<1" : String(bytes >> 20)
    }
}

/// A call refused by `LoadShedder`: `RESOURCE_EXHAUSTED`, so that the client retries later or elsewhere.
public struct Overloaded: Error, Sendable, Equatable, RPCErrorConvertible, CustomStringConvertible {
    public let service: String
    public let reason: String

    public init(service: String, reason: String) {
        self.service = service
        self.reason = reason
    }

    public var rpcErrorCode: RPCError.Code { .resourceExhausted }
    public var rpcErrorMessage: String {
        "the \(self.service) is overloaded, so it refused this call at once: \(self.reason)"
    }
    public var description: String { self.rpcErrorMessage }
}
