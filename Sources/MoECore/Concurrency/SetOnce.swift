import Synchronization

/// A value set once, awaited by any number of tasks: a server's bound address, a mesh that is ready, a request to
/// stop. `wait` returns as soon as it is set (or at once when already set), nil when the waiting task is cancelled.
public final class SetOnce<Value: Sendable>: Sendable {
    private struct State {
        var value: Value?
        var waiters: [UInt64: CheckedContinuation<Value?, Never>] = [:]
        var next: UInt64 = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// Sets the value and wakes every waiter; later calls are ignored (the first value stays).
    public func set(_ value: Value) {
        let waiters = self.state.withLock { state -> [CheckedContinuation<Value?, Never>] in
            guard state.value == nil else { return [] }
            state.value = value
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: value) }
    }

    /// The value, if set.
    public var value: Value? { self.state.withLock { $0.value } }

    /// The value once set; nil if the task is cancelled first.
    public func wait() async -> Value? {
        let id = self.state.withLock { state in
            state.next &+= 1
            return state.next
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now = self.state.withLock { state -> (Bool, Value?) in
                    if let value = state.value { return (true, value) }
                    if Task.isCancelled { return (true, nil) }
                    state.waiters[id] = continuation
                    return (false, nil)
                }
                if now.0 { continuation.resume(returning: now.1) }
            }
        } onCancel: {
            let waiter = self.state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume(returning: nil)
        }
    }
}

extension SetOnce where Value == Void {
    public func set() { self.set(()) }
}
