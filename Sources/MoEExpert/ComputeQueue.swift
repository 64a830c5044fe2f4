import Dispatch

/// Runs blocking compute (OpenBLAS calls) one job at a time on a dedicated thread, off Swift's cooperative
/// pool. One at a time because each job already uses every OpenBLAS thread.
public final class ComputeQueue: Sendable {
    private let queue: DispatchQueue

    public init(label: String = "moemesh.expert.compute") {
        self.queue = DispatchQueue(label: label)
    }

    public func run<Result: Sendable>(_ work: @escaping @Sendable () -> Result) async -> Result {
        await withCheckedContinuation { continuation in
            self.queue.async { continuation.resume(returning: work()) }
        }
    }
}
