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
}

/// An executor error that means no replica of an expert could be reached (not that the call was wrong).
public protocol ExpertUnreachableError: Error {
    /// The expert, when the error is about reachability.
    var unreachableExpert: ExpertAddress? { get }
}
