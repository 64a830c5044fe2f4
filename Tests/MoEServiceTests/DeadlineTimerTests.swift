import MoEServing
import Synchronization
import Testing

/// One timer for many deadlines: actions run in deadline order, cancelled ones never, an earlier deadline scheduled
/// late still runs first.
@Suite("deadline timer")
struct DeadlineTimerTests {
    @Test("actions run in deadline order; a cancelled one never runs; nothing is left pending")
    func order() async {
        let timer = DeadlineTimer()
        let (ran, run) = AsyncStream<String>.makeStream()
        let start = ContinuousClock.now
        timer.schedule(at: start + .milliseconds(60)) { run.yield("c") }
        let cancelled = timer.schedule(at: start + .milliseconds(40)) { run.yield("cancelled") }
        timer.schedule(at: start + .milliseconds(50)) { run.yield("b") }
        // Scheduled last, due first: the timer is armed again for it.
        timer.schedule(at: start + .milliseconds(20)) { run.yield("a") }
        timer.cancel(cancelled)
        var order: [String] = []
        for await name in ran {
            order.append(name)
            if name == "c" { break }
        }
        #expect(order == ["a", "b", "c"])
        #expect(timer.pending == 0)
    }

    @Test("a deadline already passed runs at once")
    func passed() async {
        let timer = DeadlineTimer()
        await withCheckedContinuation { continuation in
            timer.schedule(at: .now - .seconds(1)) { continuation.resume() }
        }
        #expect(timer.pending == 0)
    }
}
