import MoECore
import MoEExpert
import Testing

@Suite("an expert's load as its heartbeats report it")
struct ExpertLoadMeterTests {
    @Test("rows per second and latencies cover the window, not the last heartbeat; rows per expert are deltas")
    func figuresCoverTheWindow() {
        let meter = ExpertLoadMeter(window: .seconds(600))
        let (a, b) = (ExpertAddress(layer: "0", expert: 1), ExpertAddress(layer: "0", expert: 2))
        let started = ContinuousClock.now
        for (address, rows) in [(a, 2), (b, 3), (a, 5)] {
            meter.begin(rows: rows)
            meter.end(address, rows: rows, started: started)
        }
        let first = meter.snapshot(experts: [a, b])
        #expect(first.rowsPerExpert == [7, 3] && first.inFlightRows == 0)
        #expect(first.rowsPerSecond > 0 && first.latencyP50Ms > 0)
        // The next heartbeat with no call in between: the same calls in the window, no new rows per expert.
        let second = meter.snapshot(experts: [a, b])
        #expect(second.rowsPerExpert == [0, 0])
        #expect(second.latencyP50Ms == first.latencyP50Ms && second.latencyP99Ms == first.latencyP99Ms)
        #expect(second.rowsPerSecond > 0)
        // A meter that has seen no call reports none (the status then says "no calls", not 0.00 ms).
        let idle = ExpertLoadMeter().snapshot(experts: [a])
        #expect(idle.rowsPerSecond == 0 && idle.latencyP50Ms == 0 && idle.rowsPerExpert == [0])
    }
}
