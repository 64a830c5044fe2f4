import MoECore

/// The rows of a batch routed to one expert, not yet copied: `gather` writes them wherever the executor wants
/// them (an outgoing message's buffer, a matrix).
public struct ExpertRows: Sendable {
    public let layer: String
    public let expert: Int
    public let hidden: Matrix
    public let plan: DispatchPlan

    public init(layer: String, expert: Int, hidden: Matrix, plan: DispatchPlan) {
        self.layer = layer
        self.expert = expert
        self.hidden = hidden
        self.plan = plan
    }

    /// n_e, the number of rows.
    public var count: Int { self.plan.rowCount(ofExpert: self.expert) }
    /// H.
    public var width: Int { self.hidden.columns }

    /// Copies the rows into `destination` (`[n_e, H]`).
    public func gather(into destination: UnsafeMutableBufferPointer<Float>) {
        self.plan.gather(self.hidden, expert: self.expert, into: destination)
    }

    /// The rows as a `[n_e, H]` matrix.
    public func matrix() -> Matrix { self.plan.gather(self.hidden, expert: self.expert) }
}

/// Runs an expert on its rows: in this process, or over the network.
public protocol ExpertExecutor: Sendable {
    /// `[n_e, H] → [n_e, H]`.
    func compute(_ rows: ExpertRows) async throws -> Matrix
}
