import Synchronization

/// Waiters by key, all woken when their key is signalled: a replica that left (its calls end and go elsewhere), a
/// streamed call that was cancelled. With `remembering`, a signal that comes before anyone waits for its key is kept
/// for the first waiter (messages on a stream may be handled out of order).
public final class KeyedSignal<Key: Hashable & Sendable>: Sendable {
    /// A task running an operation that `key`'s signal cancels (`run`). The task is cancelled from other threads only
    /// under the lock, and unregistered under it before the task ends.
    private struct Runner: @unchecked Sendable {
        let task: UnsafeCurrentTask
        var fired = false
    }

    private struct State {
        var waiters: [Key: [UInt64: CheckedContinuation<Void, Never>]] = [:]
        var runners: [Key: [UInt64: Runner]] = [:]
        var unclaimed: Set<Key> = []
        var next: UInt64 = 0
    }

    private let state = Mutex(State())
    private let remembering: Bool

    public init(remembering: Bool = false) { self.remembering = remembering }

    /// Wakes every task waiting for `key`, and cancels the operations `run` runs for it.
    public func signal(_ key: Key) {
        let waiters = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
            var ran = false
            if var runners = state.runners[key], !runners.isEmpty {
                for id in runners.keys {
                    runners[id]!.fired = true
                    runners[id]!.task.cancel()
                }
                state.runners[key] = runners
                ran = true
            }
            guard let waiters = state.waiters.removeValue(forKey: key), !waiters.isEmpty else {
                if self.remembering && !ran { state.unclaimed.insert(key) }
                return []
            }
            return Array(waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Forgets a remembered signal for `key` (its call ended without anyone waiting).
    public func forget(_ key: Key) {
        _ = self.state.withLock { $0.unclaimed.remove(key) }
    }

    /// Returns when `key` is signalled, or when the task is cancelled.
    public func wait(for key: Key) async {
        let id = self.state.withLock { state in
            state.next &+= 1
            return state.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now = self.state.withLock { state -> Bool in
                    if Task.isCancelled || state.unclaimed.remove(key) != nil { return true }
                    state.waiters[key, default: [:]][id] = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiter = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
                let waiter = state.waiters[key]?.removeValue(forKey: id)
                // A key nobody waits for any more is dropped: keys may be unique per call (a stream's request ids),
                // and an empty entry left per call grew an expert by ~500 bytes a request (the soak, heaptrack).
                if state.waiters[key]?.isEmpty == true { state.waiters.removeValue(forKey: key) }
                return waiter
            }
            waiter?.resume()
        }
    }

    /// Keys with waiters or a remembered signal: what the signal holds on to (0 once every call has ended).
    var trackedKeys: Int { self.state.withLock { $0.waiters.count + $0.runners.count + $0.unclaimed.count } }

    /// `operation`'s result, or nil when `key` is signalled first: the operation is then cancelled (it runs in a task
    /// of its own, which the signal cancels; the caller's task is not).
    public func run<Result: Sendable>(
        unless key: Key, _ operation: @escaping @Sendable () async throws -> Result
    ) async throws -> Result? {
        try await withThrowingTaskGroup(of: Result?.self) { group in
            group.addTask {
                let registered = withUnsafeCurrentTask { task in
                    self.state.withLock { state -> UInt64? in
                        if self.remembering, state.unclaimed.remove(key) != nil { return nil }
                        state.next &+= 1
                        state.runners[key, default: [:]][state.next] = Runner(task: task!)
                        return state.next
                    }
                }
                guard let id = registered else { return nil }  // signalled before it started
                /// Unregisters the operation; whether the signal came meanwhile.
                @Sendable func unregister() -> Bool {
                    self.state.withLock { state in
                        let fired = state.runners[key]?.removeValue(forKey: id)?.fired ?? false
                        if state.runners[key]?.isEmpty == true { state.runners.removeValue(forKey: key) }
                        return fired
                    }
                }
                do {
                    let result = try await operation()
                    return unregister() ? nil : result
                } catch {
                    if unregister() { return nil }
                    throw error
                }
            }
            return try await group.next()!
        }
    }
}
