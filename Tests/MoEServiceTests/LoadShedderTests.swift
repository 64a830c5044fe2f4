import GRPCCore
import MoECore
import MoEModel
import MoEInProcess
import MoEProto
import MoERouter
import MoERuntime
import MoEServing
import MoETestSupport
import MoEWire
import Synchronization
import Testing

@Suite("load shedding: refused at once when the deadline cannot be met, request bytes in flight bounded")
struct LoadShedderTests {
    /// A clock the test moves by hand.
    final class ManualClock: Sendable {
        let start = ContinuousClock.now
        private let offset = Mutex<Duration>(.zero)
        var now: ContinuousClock.Instant { self.start + self.offset.withLock { $0 } }
        func advance(_ duration: Duration) { self.offset.withLock { $0 += duration } }
    }

    /// A shedder that has learnt 10 ms per call (one call alone for 10 ms), with one call in flight.
    static func loaded(_ clock: ManualClock, maxInFlightBytes: Int = 1 << 20) throws -> LoadShedder {
        let shedder = LoadShedder(
            service: "router", configuration: .init(headroom: 0.5, maxInFlightBytes: maxInFlightBytes),
            clock: { clock.now })
        let first = try shedder.admit(bytes: 10, deadline: nil)
        clock.advance(.milliseconds(10))
        shedder.finished(first)
        _ = try shedder.admit(bytes: 10, deadline: nil)
        return shedder
    }

    @Test("the time per call is learnt from every call that ended: its latency over the mean calls in flight it saw")
    func learnsTimePerCall() throws {
        let clock = ManualClock()
        let shedder = LoadShedder(service: "router", clock: { clock.now })
        // Two calls over the same 20 ms (a mean of 2 in flight): 10 ms each of the service's time.
        let a = try shedder.admit(bytes: 1, deadline: nil)
        let b = try shedder.admit(bytes: 1, deadline: nil)
        clock.advance(.milliseconds(20))
        shedder.finished(a)
        #expect(shedder.snapshot.perCall == .milliseconds(10))
        // A call that ends, answered or not, teaches too: b ran 70 ms over 90 call-milliseconds (w = 54 ms), which
        // moves the average up by a sixteenth of the difference.
        clock.advance(.milliseconds(50))
        shedder.finished(b)
        let learnt = try #require(shedder.snapshot.perCall)
        #expect(learnt > .microseconds(12_700) && learnt < .microseconds(12_900))
        #expect(shedder.snapshot.inFlight == 0 && shedder.snapshot.bytes == 0)
    }

    @Test(
        "a call that the calls ahead would make miss its deadline is refused at once, saying why; one with time is admitted"
    )
    func refusesByDeadline() throws {
        let clock = ManualClock()
        let shedder = try Self.loaded(clock)
        // Behind one call: about 2 × 10 ms, more than half of 30 ms.
        #expect {
            _ = try shedder.admit(bytes: 10, deadline: clock.now + .milliseconds(30))
        } throws: { error in
            guard let overloaded = error as? Overloaded else { return false }
            return overloaded.rpcErrorCode == .resourceExhausted
                && overloaded.rpcErrorMessage
                    == "the router is overloaded, so it refused this call at once: behind the 1 call in flight "
                    + "(about 10 ms each) it would take about 20 ms, more than 0.5 × the 30 ms left before its "
                    + "deadline"
        }
        #expect(shedder.snapshot.refused == 1 && shedder.snapshot.inFlight == 1)
        _ = try shedder.admit(bytes: 10, deadline: clock.now + .milliseconds(40))
        _ = try shedder.admit(bytes: 10, deadline: nil)
        #expect(shedder.snapshot.inFlight == 3)
    }

    @Test("nothing in flight: admitted whatever its deadline or size")
    func aloneIsAdmitted() throws {
        let clock = ManualClock()
        let shedder = LoadShedder(
            service: "expert", configuration: .init(maxInFlightBytes: 100), clock: { clock.now })
        let first = try shedder.admit(bytes: 10, deadline: nil)
        clock.advance(.milliseconds(10))
        shedder.finished(first)
        _ = try shedder.admit(bytes: 1000, deadline: clock.now + .microseconds(1))
        #expect(shedder.snapshot.inFlight == 1)
    }

    @Test("request bytes in flight stay within the budget; freed bytes admit again")
    func boundsBytes() throws {
        let clock = ManualClock()
        let shedder = LoadShedder(
            service: "expert", configuration: .init(maxInFlightBytes: 3 << 20), clock: { clock.now })
        let a = try shedder.admit(bytes: 2 << 20, deadline: nil)
        #expect {
            _ = try shedder.admit(bytes: 2 << 20, deadline: nil)
        } throws: { error in
            (error as? Overloaded)?.rpcErrorMessage
                == "the expert is overloaded, so it refused this call at once: the requests in flight (1 call) hold "
                + "2 MiB, and this call's 2 MiB would pass the limit of 3 MiB (--max-inflight-mib)"
        }
        _ = try shedder.admit(bytes: 1 << 20, deadline: nil)
        shedder.finished(a)
        _ = try shedder.admit(bytes: 2 << 20, deadline: nil)
        #expect(shedder.snapshot.bytes == 3 << 20 && shedder.snapshot.refused == 1)
    }

    @Test("a router too loaded for a Forward's deadline answers RESOURCE_EXHAUSTED at once, without calling an expert")
    func routerRefusesForward() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let clock = ManualClock()
        let executor = CountingExecutor(reference: try InProcessMoE(checkpoint: checkpoint))
        let service = RouterService(
            modelType: checkpoint.modelType, hiddenSize: checkpoint.hiddenSize,
            pipelines: try checkpoint.layers.map { try MoELayerPipeline(checkpoint: checkpoint, layer: $0) },
            executor: executor, loadShedder: try Self.loaded(clock))
        var request = Moemesh_V1_ForwardRequest()
        request.layer = "0"
        request.hiddenStates = Moemesh_V1_Tensor(model.randomHidden(tokens: 2), dtype: .f32)
        let tight = request
        await #expect {
            try await RequestDeadline.$current.withValue(clock.now + .milliseconds(30)) {
                _ = try await service.forward(tight)
            }
        } throws: { error in
            (error as? Overloaded)?.rpcErrorCode == .resourceExhausted
        }
        #expect(executor.calls.withLock { $0 } == 0)
        // With time for the call ahead and this one, it is served.
        _ = try await RequestDeadline.$current.withValue(clock.now + .milliseconds(100)) {
            try await service.forward(request)
        }
        #expect(executor.calls.withLock { $0 } > 0)
    }
}

/// Runs experts in process, counting the calls.
private final class CountingExecutor: ExpertExecutor {
    let reference: InProcessMoE
    let calls = Mutex(0)

    init(reference: InProcessMoE) { self.reference = reference }

    func compute(_ rows: ExpertRows) async throws -> Matrix {
        self.calls.withLock { $0 += 1 }
        return try await self.reference.executor.compute(rows)
    }
}
