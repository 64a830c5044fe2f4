import MoECore
import MoERuntime
import Synchronization

/// An expert executor that holds every call until the test releases it, so that tests order events by what
/// happened (calls held, calls queued), never by sleeping. Counts the calls it was given.
public final class HoldingExecutor<Inner: ExpertExecutor>: ExpertExecutor, Sendable {
    private struct State {
        var held: [CheckedContinuation<Void, Never>] = []
        var passThrough = false
        var calls = 0
        var waiters: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }

    public let inner: Inner
    private let state = Mutex(State())

    public init(_ inner: Inner) { self.inner = inner }

    /// Calls given so far.
    public var calls: Int { self.state.withLock { $0.calls } }

    public func compute(_ rows: ExpertRows) async throws -> Matrix {
        await withCheckedContinuation { continuation in
            let (passes, ready) = self.state.withLock { state -> (Bool, [CheckedContinuation<Void, Never>]) in
                state.calls += 1
                if state.passThrough { return (true, []) }
                state.held.append(continuation)
                let count = state.held.count
                let ready = state.waiters.filter { $0.count <= count }.map(\.continuation)
                state.waiters.removeAll { $0.count <= count }
                return (false, ready)
            }
            if passes { continuation.resume() }
            for waiter in ready { waiter.resume() }
        }
        return try await self.inner.compute(rows)
    }

    /// Returns once `count` calls are held.
    public func waitUntilHeld(_ count: Int) async {
        await withCheckedContinuation { continuation in
            let ready = self.state.withLock { state -> Bool in
                if state.held.count >= count { return true }
                state.waiters.append((count, continuation))
                return false
            }
            if ready { continuation.resume() }
        }
    }

    /// Lets the held calls run; later calls are held too, unless `holdLater` is false.
    public func release(holdLater: Bool = true) {
        let held = self.state.withLock { state in
            state.passThrough = !holdLater
            defer { state.held = [] }
            return state.held
        }
        for call in held { call.resume() }
    }
}
