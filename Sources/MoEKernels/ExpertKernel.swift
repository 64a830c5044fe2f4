import MoECore

/// One expert FFN applied to a block of token rows: `x [N, H] → y [N, H]`.
public protocol ExpertKernel: Sendable {
    var hiddenSize: Int { get }
    var intermediateSize: Int { get }
    /// Runs the FFN on every row of `rows` (`[N, H]`), returning `[N, H]`. Throws only for device failures (a GPU
    /// out of memory, a failed launch); the CPU kernel never throws.
    func forward(_ rows: Matrix) throws -> Matrix
}
