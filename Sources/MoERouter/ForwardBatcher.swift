import MoECore
import MoERuntime
import MoEServing
import ServiceLifecycle
import Synchronization

/// Dynamic batching: concurrent `Forward` calls for the same layer share one RPC per expert.
///
/// Up to `maxConcurrentBatches` batches of a layer run at once, so a batch held up by a slow expert call holds up
/// only its own calls. A call that finds a free slot leads a batch; otherwise it queues, and when a batch finishes
/// the first queued call is woken as the next leader. A leader waits `maxDelay` for more calls, but only while the
/// layer is under concurrent load (its previous batch held more than one call), so a lone client never waits; then
/// it runs its rows together with every queued call's (up to `maxTokens` rows) as one batch and hands each call its
/// rows of the answer. Decode is memory-bound (each batch streams every chosen expert's weights once), so
/// throughput grows with the batch. Only policies that route each token on its own are batched
/// (`MoELayerResult.isTokenwise`); routing is batch-invariant (`GateProjection`), so a call's routing is the same
/// bits in any batch.
///
/// A call whose client has gone (its task cancelled) leaves the queue at once; a batch runs with the latest deadline
/// of its calls (`RequestDeadline`) and is cancelled when every call in it has gone.
///
/// A batch of several calls runs in a child task of `run()` (a `Service` of the router's group), not in any one
/// caller's task, so that its leader's cancellation cannot fail the others; `run()` must be running for such a batch
/// to start (a lone call runs in its caller's task).
public final class ForwardBatcher: Service, Sendable {
    public struct Configuration: Sendable, Equatable {
        public var maxTokens: Int
        public var maxDelay: Duration
        public var maxConcurrentBatches: Int

        public init(maxTokens: Int = 4096, maxDelay: Duration = .milliseconds(2), maxConcurrentBatches: Int = 2) {
            self.maxTokens = max(1, maxTokens)
            self.maxDelay = maxDelay
            self.maxConcurrentBatches = max(1, maxConcurrentBatches)
        }
    }

    fileprivate enum Wake: Sendable {
        case lead
        case done(Result<MoELayerResult, any Error>)
        case cancelled
    }

    /// One call waiting: in the queue, or for its batch's answer.
    fileprivate final class Waiter: Sendable {
        private struct State {
            var continuation: CheckedContinuation<Wake, Never>?
            var pending: Wake?
            var resumed = false
        }

        let hidden: Matrix
        let deadline: ContinuousClock.Instant?
        private let state = Mutex(State())

        init(hidden: Matrix, deadline: ContinuousClock.Instant?) {
            self.hidden = hidden
            self.deadline = deadline
        }

        /// Waits for `resume`; one that came first is returned at once.
        func wait(_ continuation: CheckedContinuation<Wake, Never>) {
            let wake = self.state.withLock { state -> Wake? in
                if let pending = state.pending { return pending }
                state.continuation = continuation
                return nil
            }
            if let wake { continuation.resume(returning: wake) }
        }

        /// Wakes the waiter once; later calls do nothing and return false.
        @discardableResult
        func resume(_ wake: Wake) -> Bool {
            let (delivered, continuation) = self.state.withLock { state -> (Bool, CheckedContinuation<Wake, Never>?) in
                guard !state.resumed else { return (false, nil) }
                state.resumed = true
                guard let continuation = state.continuation else {
                    state.pending = wake
                    return (true, nil)
                }
                return (true, continuation)
            }
            continuation?.resume(returning: wake)
            return delivered
        }
    }

    /// A batch of several calls, abandoned (its run cancelled) once all its calls have gone.
    fileprivate final class Batch: Sendable {
        private let live: Mutex<Int>
        /// Set when the last of its calls has gone.
        let abandoned = SetOnce<Void>()

        init(calls: Int) { self.live = Mutex(calls) }

        func callLeft() {
            if self.live.withLock({ live in
                live -= 1
                return live == 0
            }) {
                self.abandoned.set()
            }
        }
    }

    /// A batch for `run()` to run: `work` runs it and hands every call its rows.
    fileprivate struct BatchJob: Sendable {
        let batch: Batch
        let work: @Sendable () async -> Void
    }

    private struct State {
        var queues: [String: [Waiter]] = [:]
        var running: [String: Int] = [:]
        /// Calls in each layer's last batch.
        var lastBatchCalls: [String: Int] = [:]
        /// The batch each waiting call belongs to (by identity).
        var batches: [ObjectIdentifier: Batch] = [:]
    }

    public let configuration: Configuration
    private let state = Mutex(State())
    /// Announced when `pendingCalls` may have changed.
    public let changes = StateChanges()

    private let jobs: AsyncStream<BatchJob>
    private let queue: AsyncStream<BatchJob>.Continuation

    public init(configuration: Configuration) {
        self.configuration = configuration
        (self.jobs, self.queue) = AsyncStream.makeStream()
    }

    /// Runs each batch of several calls in a child task, until graceful shutdown (which comes after the server's:
    /// the calls in flight have been answered) or cancellation; a batch whose calls have all gone is cancelled.
    public func run() async {
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for await job in self.jobs {
                    group.addTask { await untilFirstEnds(job.work, { _ = await job.batch.abandoned.wait() }) }
                }
            }
        } onGracefulShutdown: {
            self.queue.finish()
        }
    }

    /// Calls of `layer` waiting for a batch (not counting those whose batch runs).
    public func pendingCalls(layer: String) -> Int {
        self.state.withLock { $0.queues[layer]?.count ?? 0 }
    }

    /// Runs `hidden` (`[T, H]`) through `pipeline`, batched with concurrent calls for the same layer.
    public func forward(
        _ hidden: Matrix, pipeline: MoELayerPipeline, executor: some ExpertExecutor
    ) async throws -> MoELayerResult {
        let layer = pipeline.spec.name
        let call = Waiter(hidden: hidden, deadline: RequestDeadline.current)
        switch await self.wait(call, layer: layer, arrive: true) {
        case .cancelled: throw CancellationError()
        case .done(let result): return try result.get()
        case .lead: break
        }
        if self.configuration.maxDelay > .zero, self.underConcurrentLoad(layer: layer) {
            try? await Task.sleep(for: self.configuration.maxDelay)  // the batching window
        }
        // The leader waits for its rows of a batch like the others (below).
        let leader = Waiter(hidden: hidden, deadline: call.deadline)
        let (followers, batch) = self.takeQueued(layer: layer, leader: leader)
        self.changes.changed()
        guard let batch else {
            defer { self.finished(layer: layer) }
            return try await pipeline.forward(hidden, executor: executor)
        }
        // The batch carries other clients' calls: it runs in `run()`'s task group, so that the leader's cancellation
        // (its client gone, its deadline passed) cannot fail them.
        let members = [leader] + followers
        var values = hidden.values
        var ranges = [0..<hidden.rows]
        for follower in followers {
            ranges.append(values.count / hidden.columns..<(values.count / hidden.columns + follower.hidden.rows))
            values += follower.hidden.values
        }
        let rows = Matrix(rows: values.count / hidden.columns, columns: hidden.columns, values: values)
        let deadline = members.dropFirst().reduce(leader.deadline) { RequestDeadline.latest($0, $1.deadline) }
        let rowsOfEach = ranges
        let answer = { @Sendable (result: Result<MoELayerResult, any Error>) in
            self.state.withLock { state in
                for member in members { state.batches[ObjectIdentifier(member)] = nil }
            }
            self.finished(layer: layer)
            for (index, member) in members.enumerated() {
                member.resume(.done(result.map { $0.rows(rowsOfEach[index]) }))
            }
        }
        let job = BatchJob(batch: batch) {
            do {
                answer(
                    .success(
                        try await RequestDeadline.$current.withValue(deadline) {
                            try await pipeline.forward(rows, executor: executor)
                        }))
            } catch {
                answer(.failure(error))
            }
        }
        if case .terminated = self.queue.yield(job) {
            answer(.failure(RouterError.notReady("the router is shutting down: it runs no more batches")))
        }
        switch await self.wait(leader, layer: layer, arrive: false) {
        case .cancelled, .lead: throw CancellationError()
        case .done(let result): return try result.get()
        }
    }

    /// Waits for `call` to be woken; its task's cancellation takes it out of the queue, or out of its batch.
    private func wait(_ call: Waiter, layer: String, arrive: Bool) async -> Wake {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                call.wait(continuation)
                if arrive { self.arrive(layer: layer, call) }
            }
        } onCancel: {
            let batch = self.state.withLock { state -> Batch? in
                if let index = state.queues[layer]?.firstIndex(where: { $0 === call }) {
                    state.queues[layer]!.remove(at: index)
                    return nil
                }
                return state.batches.removeValue(forKey: ObjectIdentifier(call))
            }
            batch?.callLeft()
            call.resume(.cancelled)
            self.changes.changed()
        }
    }

    private func arrive(layer: String, _ call: Waiter) {
        self.state.withLock { $0.queues[layer, default: []].append(call) }
        self.wakeLeaders(layer: layer)
        self.changes.changed()
    }

    /// Wakes the first queued call as a leader while a batch slot is free. A call that has gone meanwhile (it may
    /// still be queued when its cancellation races its arrival) gives its slot back.
    private func wakeLeaders(layer: String) {
        while let leader = self.state.withLock({ state -> Waiter? in
            guard state.running[layer, default: 0] < self.configuration.maxConcurrentBatches,
                let leader = state.queues[layer]?.first
            else { return nil }
            state.queues[layer]!.removeFirst()
            state.running[layer, default: 0] += 1
            return leader
        }) {
            if leader.resume(.lead) { return }
            self.state.withLock { $0.running[layer, default: 1] -= 1 }
        }
    }

    private func underConcurrentLoad(layer: String) -> Bool {
        self.state.withLock { ($0.lastBatchCalls[layer] ?? 1) > 1 || !($0.queues[layer]?.isEmpty ?? true) }
    }

    /// Queued calls to run with the leader's, up to `maxTokens` rows in all, and the batch they form with it (nil
    /// when none was queued).
    private func takeQueued(layer: String, leader: Waiter) -> ([Waiter], Batch?) {
        self.state.withLock { state in
            var tokens = leader.hidden.rows
            var taken: [Waiter] = []
            while let next = state.queues[layer]?.first, tokens + next.hidden.rows <= self.configuration.maxTokens {
                tokens += next.hidden.rows
                taken.append(next)
                state.queues[layer]!.removeFirst()
            }
            state.lastBatchCalls[layer] = taken.count + 1
            guard !taken.isEmpty else { return ([], nil) }
            let batch = Batch(calls: taken.count + 1)
            for member in [leader] + taken { state.batches[ObjectIdentifier(member)] = batch }
            return (taken, batch)
        }
    }

    private func finished(layer: String) {
        self.state.withLock { $0.running[layer, default: 1] -= 1 }
        self.wakeLeaders(layer: layer)
        self.changes.changed()
    }
}
