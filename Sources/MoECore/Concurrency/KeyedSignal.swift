import Synchronization

/// Waiters by key, all woken when their key is signalled: a replica that left (its calls end and go elsewhere), a
/// streamed call that was cancelled. With `remembering`, a signal that comes before anyone waits for its key is kept
/// for the first waiter (messages on a stream may be handled out of order).
public final class KeyedSignal<Key: Hashable & Sendable>: Sendable {
    private struct State {
        var waiters: [Key: [UInt64: CheckedContinuation<Void, Never>]] = [:]
        var unclaimed: Set<Key> = []
        var next: UInt64 = 0
    }

    private let state = Mutex(State())
    private let remembering: Bool

    public init(remembering: Bool = false) { self.remembering = remembering }

    /// Wakes every task waiting for `key`.
    public func signal(_ key: Key) {
        let waiters = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard let waiters = state.waiters.removeValue(forKey: key), !waiters.isEmpty else {
                if self.remembering { state.unclaimed.insert(key) }
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
    var trackedKeys: Int { self.state.withLock { $0.waiters.count + $0.unclaimed.count } }

    /// `operation`'s result, or nil when `key` is signalled first (the operation is then cancelled).
    public func run<Result: Sendable>(
        unless key: Key, _ operation: @escaping @Sendable () async throws -> Result
    ) async throws -> Result? {
        try await withThrowingTaskGroup(of: Result?.self) { group in
            group.addTask { try await operation() }
            group.addTask {
                await self.wait(for: key)
                return nil
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }
}
