import MoECore
import MoERouter
import MoEServing
import Synchronization
import Testing

/// A clock the test moves by hand.
private final class ManualClock: Sendable {
    private let now = Mutex(ContinuousClock.now)
    var instant: ContinuousClock.Instant { self.now.withLock { $0 } }
    func advance(_ duration: Duration) { self.now.withLock { $0 += duration } }
}

@Suite("replica scheduler: hedge delay, budget, ejection")
struct ReplicaSchedulerTests {
    static let address = ExpertAddress(layer: "0", expert: 3)
    static let a = ServiceEndpoint(host: "10.0.0.1", port: 1)

    @Test(
        "the hedge delay is the ceiling until 16 latencies are known, then p95 × factor within floor and ceiling, per call size"
    )
    func hedgeDelay() {
        let scheduler = ReplicaScheduler(
            configuration: .init(hedgeFactor: 2, hedgeFloor: .milliseconds(5), hedgeCeiling: .milliseconds(250)))
        #expect(scheduler.hedgeDelay(for: Self.address, rows: 1) == .milliseconds(250))
        // 20 calls of 1 row: 18 at 10 ms, two at 40 ms → p95 (nearest rank: the 19th) = 40 ms → 80 ms.
        for latency in Array(repeating: 10, count: 18) + [40, 40] {
            scheduler.callStarted(Self.a)
            scheduler.callSucceeded(Self.a, address: Self.address, rows: 1, latency: .milliseconds(latency))
        }
        #expect(scheduler.hedgeDelay(for: Self.address, rows: 1) == .milliseconds(80))
        // Calls of another size (256 rows) have learnt nothing yet; 2 rows share the class of ⌈log2⌉ = 1.
        #expect(scheduler.hedgeDelay(for: Self.address, rows: 256) == .milliseconds(250))
        // Fast calls: the floor.
        for _ in 0..<64 {
            scheduler.callStarted(Self.a)
            scheduler.callSucceeded(Self.a, address: Self.address, rows: 1, latency: .microseconds(300))
        }
        #expect(scheduler.hedgeDelay(for: Self.address, rows: 1) == .milliseconds(5))
        #expect(ReplicaScheduler(configuration: .init(hedging: false)).hedgeDelay(for: Self.address, rows: 1) == nil)
    }

    @Test("hedges never exceed the budget: the burst plus 10% of calls", arguments: [0, 50, 1000])
    func budget(calls: Int) {
        let scheduler = ReplicaScheduler(configuration: .init(hedgeBudget: 0.1, hedgeBurst: 10))
        var hedges = 0
        for _ in 0..<calls {
            scheduler.callStarted(Self.a)
            scheduler.callEnded(Self.a)
            if scheduler.takeHedge() { hedges += 1 }
        }
        while scheduler.takeHedge() { hedges += 1 }
        #expect(Double(hedges) <= 10 + 0.1 * Double(calls) + 1e-9, "\(hedges) hedges for \(calls) calls")
        #expect(hedges >= min(10, calls / 10))
        #expect(scheduler.statistics.hedges == hedges)
    }

    @Test(
        "a replica is ejected at once when unreachable or after 3 lost hedges, for 1 s, then 2 s, 4 s … when it keeps failing"
    )
    func ejectionBacksOff() {
        let clock = ManualClock()
        let ejections = Mutex<[ReplicaScheduler.Ejection]>([])
        let scheduler = ReplicaScheduler(
            configuration: .init(ejectAfterHedgeLosses: 3, ejectionTime: .seconds(1), maxEjectionTime: .seconds(30)),
            onEjection: { ejection in ejections.withLock { $0.append(ejection) } }, clock: { clock.instant })
        scheduler.hedgeWon(against: Self.a)
        scheduler.hedgeWon(against: Self.a)
        #expect(!scheduler.isEjected(Self.a))
        scheduler.hedgeWon(against: Self.a)
        #expect(scheduler.isEjected(Self.a))
        clock.advance(.milliseconds(999))
        #expect(scheduler.isEjected(Self.a))
        clock.advance(.milliseconds(2))
        #expect(!scheduler.isEjected(Self.a))
        // Fails again soon after: twice as long.
        scheduler.callStarted(Self.a)
        scheduler.callEnded(Self.a, unreachable: "UNAVAILABLE: connection refused")
        clock.advance(.milliseconds(1999))
        #expect(scheduler.isEjected(Self.a))
        clock.advance(.milliseconds(2))
        scheduler.callStalled(Self.a, waited: .seconds(1))
        #expect(ejections.withLock { $0.map(\.duration) } == [.seconds(1), .seconds(2), .seconds(4)])
        #expect(ejections.withLock { $0.map(\.reason) }.last == "no answer within 1000.00 ms")
        #expect(scheduler.takeEjections().count == 3 && scheduler.takeEjections().isEmpty)
        // A success clears the count of lost hedges.
        clock.advance(.seconds(5))
        scheduler.hedgeWon(against: Self.a)
        scheduler.hedgeWon(against: Self.a)
        scheduler.callStarted(Self.a)
        scheduler.callSucceeded(Self.a, address: Self.address, rows: 1, latency: .milliseconds(1))
        scheduler.hedgeWon(against: Self.a)
        #expect(!scheduler.isEjected(Self.a))
    }

    @Test("the stall timeout is factor × the learnt hedge delay, at least the floor")
    func stallTimeout() {
        let scheduler = ReplicaScheduler(
            configuration: .init(hedgeCeiling: .milliseconds(250), stallFactor: 10, stallFloor: .seconds(1)))
        #expect(scheduler.stallTimeout(for: Self.address, rows: 8) == .milliseconds(2500))
        for _ in 0..<16 {
            scheduler.callStarted(Self.a)
            scheduler.callSucceeded(Self.a, address: Self.address, rows: 8, latency: .milliseconds(2))
        }
        #expect(scheduler.stallTimeout(for: Self.address, rows: 8) == .seconds(1))
    }
}
