import MoECore
import MoERuntime
import Synchronization

/// Dynamic batching: concurrent `Forward` calls for the same layer share one RPC per expert.
///
/// At most `maxConcurrentBatches` batches of a layer run at once. A call that finds a free slot leads a batch;
/// otherwise it queues, and when a batch finishes the first queued call is woken as the next leader. A leader waits
/// `maxDelay` for more calls, but only while the layer is under concurrent load (its previous batch held more
/// than one call), so a lone client never waits; then it runs its rows together with every queued call's (up to
/// `maxTokens` rows) as one batch and hands each call its rows of the answer. Decode is memory-bound (each batch
/// streams every chosen expert's weights once), so throughput grows with the batch. Only policies that route each
/// token on its own are batched (`MoELayerResult.isTokenwise`).
public final class ForwardBatcher: Sendable {
    public struct Configuration: Sendable, Equatable {
        public var maxTokens: Int
        public var maxDelay: Duration
        public var maxConcurrentBatches: Int

        public init(maxTokens: Int = 4096, maxDelay: Duration = .milliseconds(2), maxConcurrentBatches: Int = 1) {
            self.maxTokens = max(1, maxTokens)
            self.maxDelay = maxDelay
            self.maxConcurrentBatches = max(1, maxConcurrentBatches)
        }
    }

    private enum Wake: Sendable {
        case done(Result<MoELayerResult, any Error>)
        case lead
    }

    private struct Entry: Sendable {
        let hidden: Matrix
        let continuation: CheckedContinuation<Wake, Never>
    }

    private struct State {
        var queues: [String: [Entry]] = [:]
        var running: [String: Int] = [:]
        /// Calls in each layer's last batch.
        var lastBatchCalls: [String: Int] = [:]
    }

    public let configuration: Configuration
    private let state = Mutex(State())

    public init(configuration: Configuration) { self.configuration = configuration }

    /// Runs `hidden` (`[T, H]`) through `pipeline`, batched with concurrent calls for the same layer.
    public func forward(
        _ hidden: Matrix, pipeline: MoELayerPipeline, executor: some ExpertExecutor
    ) async throws -> MoELayerResult {
        let layer = pipeline.spec.name
        let wake = await withCheckedContinuation { continuation in
            self.arrive(layer: layer, Entry(hidden: hidden, continuation: continuation))
        }
        switch wake {
        case .done(let result):
            return try result.get()
        case .lead:
            if self.configuration.maxDelay > .zero, self.underConcurrentLoad(layer: layer) {
                try? await Task.sleep(for: self.configuration.maxDelay)
            }
            let followers = self.takeQueued(layer: layer, leaderTokens: hidden.rows)
            defer { self.finished(layer: layer) }
            guard !followers.isEmpty else {
                return try await pipeline.forward(hidden, executor: executor)
            }
            var values = hidden.values
            var ranges = [0..<hidden.rows]
            for follower in followers {
                ranges.append(values.count / hidden.columns..<(values.count / hidden.columns + follower.hidden.rows))
                values += follower.hidden.values
            }
            let batch = Matrix(rows: values.count / hidden.columns, columns: hidden.columns, values: values)
            do {
                // The batch carries other clients' calls: it runs in a task of its own, so that the leader's
                // cancellation (its client gone, its deadline passed) cannot fail them. The leader only awaits it.
                let result = try await Task { try await pipeline.forward(batch, executor: executor) }.value
                for (index, follower) in followers.enumerated() {
                    follower.continuation.resume(returning: .done(.success(result.rows(ranges[index + 1]))))
                }
                return result.rows(ranges[0])
            } catch {
                for follower in followers { follower.continuation.resume(returning: .done(.failure(error))) }
                throw error
            }
        }
    }

    /// Calls of `layer` waiting for a batch (not counting those whose batch runs).
    public func pendingCalls(layer: String) -> Int {
        self.state.withLock { $0.queues[layer]?.count ?? 0 }
    }

    private func arrive(layer: String, _ entry: Entry) {
        let leader = self.state.withLock { state in
            state.queues[layer, default: []].append(entry)
            return Self.nextLeader(layer: layer, in: &state, limit: self.configuration.maxConcurrentBatches)
        }
        leader?.continuation.resume(returning: .lead)
    }

    /// The first queued call, removed from the queue, if a batch slot is free.
    private static func nextLeader(layer: String, in state: inout State, limit: Int) -> Entry? {
        guard state.running[layer, default: 0] < limit, let leader = state.queues[layer]?.first else { return nil }
        state.queues[layer]!.removeFirst()
        state.running[layer, default: 0] += 1
        return leader
    }

    private func underConcurrentLoad(layer: String) -> Bool {
        self.state.withLock { ($0.lastBatchCalls[layer] ?? 1) > 1 || !($0.queues[layer]?.isEmpty ?? true) }
    }

    /// Queued calls to run with the leader's, up to `maxTokens` rows in all.
    private func takeQueued(layer: String, leaderTokens: Int) -> [Entry] {
        self.state.withLock { state in
            var tokens = leaderTokens
            var taken: [Entry] = []
            while let next = state.queues[layer]?.first, tokens + next.hidden.rows <= self.configuration.maxTokens {
                tokens += next.hidden.rows
                taken.append(next)
                state.queues[layer]!.removeFirst()
            }
            state.lastBatchCalls[layer] = taken.count + 1
            return taken
        }
    }

    private func finished(layer: String) {
        let leader = self.state.withLock { state in
            state.running[layer, default: 1] -= 1
            return Self.nextLeader(layer: layer, in: &state, limit: self.configuration.maxConcurrentBatches)
        }
        leader?.continuation.resume(returning: .lead)
    }
}
