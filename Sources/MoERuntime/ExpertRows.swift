import MoECore

/// The rows of a batch that go to one expert, not yet copied: `gather` writes them wherever the executor wants
/// them (an outgoing message's buffer, a matrix). A routed expert gets the rows its plan gives it; the shared
/// expert gets every row.
public struct ExpertRows: Sendable {
    public let layer: String
    public let expert: Int
    public let hidden: Matrix
    /// nil: every row (the shared expert).
    public let plan: DispatchPlan?

    public init(layer: String, expert: Int, hidden: Matrix, plan: DispatchPlan?) {
        self.layer = layer
        self.expert = expert
        self.hidden = hidden
        self.plan = plan
    }

    public var address: ExpertAddress { ExpertAddress(layer: self.layer, expert: self.expert) }

    /// n_e, the number of rows.
    public var count: Int { self.plan?.rowCount(ofExpert: self.expert) ?? self.hidden.rows }
    /// H.
    public var width: Int { self.hidden.columns }

    /// Copies the rows into `destination` (`[n_e, H]`).
    public func gather(into destination: UnsafeMutableBufferPointer<Float>) {
        if let plan = self.plan {
            plan.gather(self.hidden, expert: self.expert, into: destination)
        } else {
            _ = self.hidden.values.withUnsafeBufferPointer { destination.initialize(fromContentsOf: $0) }
        }
    }

    /// The rows as a `[n_e, H]` matrix.
    public func matrix() -> Matrix { self.plan?.gather(self.hidden, expert: self.expert) ?? self.hidden }
}

/// Runs an expert on its rows: in this process, or over the network.
public protocol ExpertExecutor: Sendable {
    /// `[n_e, H] → [n_e, H]`.
    func compute(_ rows: ExpertRows) async throws -> Matrix

    /// The experts a layer's batch chose, each `[n_e, H] → [n_e, H]`: what was computed, in the order of `parts`,
    /// and the first failure (the parts still running are then cancelled). An executor may send several parts in
    /// one message; by default each runs on its own (`computeEach`).
    func compute(_ parts: [ExpertRows]) async -> ExpertOutputs
}

/// The outputs of a layer's experts: each part's `[n_e, H]`, nil where it was not computed, and why not.
public struct ExpertOutputs: Sendable {
    public var outputs: [Matrix?]
    /// The first failure; nil when every part was computed.
    public var failure: (any Error)?

    public init(count: Int) {
        self.outputs = Array(repeating: nil, count: count)
        self.failure = nil
    }

    /// Records `error` unless a failure came first.
    public mutating func failed(_ error: any Error) {
        if self.failure == nil { self.failure = error }
    }

    /// Records the outputs of the parts at `indices` (in order).
    public mutating func collect(_ indices: [Int], _ outputs: [Matrix]) {
        for (index, output) in zip(indices, outputs) { self.outputs[index] = output }
    }
}

extension ExpertExecutor {
    public func compute(_ parts: [ExpertRows]) async -> ExpertOutputs { await self.computeEach(parts) }

    /// Each part through `compute(_:)`, concurrently; the first failure cancels the others.
    public func computeEach(_ parts: [ExpertRows]) async -> ExpertOutputs {
        if parts.count == 1 {
            var result = ExpertOutputs(count: 1)
            do { result.outputs[0] = try await self.compute(parts[0]) } catch { result.failed(error) }
            return result
        }
        return await withThrowingTaskGroup(of: (Int, Matrix).self) { group in
            for (index, part) in parts.enumerated() {
                group.addTask { (index, try await self.compute(part)) }
            }
            var result = ExpertOutputs(count: parts.count)
            while true {
                do {
                    guard let (index, output) = try await group.next() else { return result }
                    result.outputs[index] = output
                } catch {
                    if result.failure == nil { group.cancelAll() }
                    result.failed(error)
                }
            }
        }
    }
}

/// An executor error that means no replica of an expert could be reached (not that the call was wrong).
public protocol ExpertUnreachableError: Error {
    /// The expert, when the error is about reachability.
    var unreachableExpert: ExpertAddress? { get }
}
