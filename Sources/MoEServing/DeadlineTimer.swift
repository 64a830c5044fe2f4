import Dispatch
import Synchronization

/// Deadlines of many calls on one timer: `schedule` registers an action to run at a deadline, `cancel` takes it back
/// (the common case: the call was answered). One dispatch timer source is armed for the earliest deadline and
/// re-armed as it changes, so a call costs a heap insertion and removal under a lock, where a `Task.sleep` per call
/// costs a task and leaves a timer behind that fires even after its sleep was cancelled.
public final class DeadlineTimer: Sendable {
    private struct Entry: Comparable {
        let deadline: ContinuousClock.Instant
        let id: UInt64
        static func < (lhs: Entry, rhs: Entry) -> Bool { (lhs.deadline, lhs.id) < (rhs.deadline, rhs.id) }
    }

    private struct State {
        /// A binary min-heap of deadlines; entries whose action is gone (cancelled) are skipped when popped.
        var heap: [Entry] = []
        var actions: [UInt64: @Sendable () -> Void] = [:]
        var nextID: UInt64 = 0
        /// The deadline the timer is armed for.
        var armed: ContinuousClock.Instant?
    }

    private let state = Mutex(State())
    private let queue = DispatchQueue(label: "moemesh.deadlines")
    private nonisolated(unsafe) let timer: any DispatchSourceTimer

    public init() {
        self.timer = DispatchSource.makeTimerSource(queue: self.queue)
        self.timer.setEventHandler { [weak self] in self?.fire() }
        self.timer.activate()
    }

    deinit { self.timer.cancel() }

    /// Runs `action` (on the timer's queue) at `deadline`, unless cancelled first; returns the id `cancel` takes.
    @discardableResult
    public func schedule(at deadline: ContinuousClock.Instant, _ action: @escaping @Sendable () -> Void) -> UInt64 {
        let (id, rearm) = self.state.withLock { state in
            state.nextID &+= 1
            let id = state.nextID
            state.actions[id] = action
            Self.push(Entry(deadline: deadline, id: id), into: &state.heap)
            guard state.armed.map({ deadline < $0 }) ?? true else { return (id, nil as ContinuousClock.Instant?) }
            state.armed = deadline
            return (id, deadline)
        }
        if let rearm { self.arm(rearm) }
        return id
    }

    /// Takes back the action of `id` (nothing happens if it already ran).
    public func cancel(_ id: UInt64) {
        self.state.withLock { state in
            state.actions.removeValue(forKey: id)
            // Cancelled entries leave the heap when they reach its top; past twice the live ones, it is rebuilt.
            if state.heap.count > 2 * state.actions.count + 1024 {
                let live = state.heap.filter { state.actions[$0.id] != nil }
                state.heap = []
                for entry in live { Self.push(entry, into: &state.heap) }
            }
        }
    }

    /// Actions scheduled and not yet run or cancelled.
    public var pending: Int { self.state.withLock { $0.actions.count } }

    private func arm(_ deadline: ContinuousClock.Instant) {
        let (seconds, attoseconds) = (deadline - .now).components
        let nanoseconds = max(0, seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
        self.timer.schedule(deadline: .now() + .nanoseconds(Int(clamping: nanoseconds)), leeway: .milliseconds(1))
    }

    /// Runs every action due, then arms the timer for the next deadline.
    private func fire() {
        let now = ContinuousClock.now
        let (due, next) = self.state.withLock { state -> ([@Sendable () -> Void], ContinuousClock.Instant?) in
            var due: [@Sendable () -> Void] = []
            while let first = state.heap.first {
                if state.actions[first.id] == nil {
                    _ = Self.pop(&state.heap)  // cancelled
                } else if first.deadline <= now {
                    _ = Self.pop(&state.heap)
                    due.append(state.actions.removeValue(forKey: first.id)!)
                } else {
                    break
                }
            }
            state.armed = state.heap.first?.deadline
            return (due, state.armed)
        }
        for action in due { action() }
        if let next { self.arm(next) }
    }

    private static func push(_ entry: Entry, into heap: inout [Entry]) {
        heap.append(entry)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child] < heap[parent] else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    private static func pop(_ heap: inout [Entry]) -> Entry? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let first = heap.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < heap.count, heap[left] < heap[smallest] { smallest = left }
            if right < heap.count, heap[right] < heap[smallest] { smallest = right }
            if smallest == parent { break }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
        return first
    }
}
