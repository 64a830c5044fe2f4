import Synchronization

/// Announces that some state changed, so that whoever waits for a condition on it checks again: a queue's depth, rows
/// in flight, what a cache holds — states no single event stands for. `wait(until:)` is woken by each `changed()`,
/// never by a clock.
public final class StateChanges: Sendable {
    private struct State {
        var version: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter: UInt64 = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// Wakes every waiter to check its condition again.
    public func changed() {
        let waiters = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.version &+= 1
            guard !state.waiters.isEmpty else { return [] }
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns true once `condition` holds (checked now and after each change); false if the task is cancelled first.
    public func wait(until condition: () -> Bool) async -> Bool {
        while true {
            let seen = self.state.withLock { $0.version }
            if condition() { return true }
            if Task.isCancelled { return false }
            await self.nextChange(after: seen)
        }
    }

    /// How many changes there have been; a waiter reads it before checking its condition.
    public var version: UInt64 { self.state.withLock { $0.version } }

    /// Returns at the first change after version `seen` (at once if there was one), at `deadline`, or on
    /// cancellation: for a waiter whose condition this type cannot evaluate (an actor's state), which checks it again
    /// itself.
    public func nextChange(after seen: UInt64, until deadline: ContinuousClock.Instant) async {
        await untilFirstEnds({ await self.nextChange(after: seen) }, { try? await Task.sleep(until: deadline) })
    }

    /// Returns at the first change after version `seen` (at once if there was one), or on cancellation.
    private func nextChange(after seen: UInt64) async {
        let id = self.state.withLock { state in
            state.nextWaiter &+= 1
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now = self.state.withLock { state -> Bool in
                    if state.version != seen || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiter = self.state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
    }
}
