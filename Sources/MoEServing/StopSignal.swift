import Synchronization

/// A flag set once to ask something to stop, for what must stop in a chosen order rather than when its task is
/// cancelled (cancelling a NIO server with connections still queued traps inside SwiftNIO).
public final class StopSignal: Sendable {
    private let value = Mutex(false)

    public init() {}

    public func set() { self.value.withLock { $0 = true } }

    public var isSet: Bool { self.value.withLock { $0 } }

    /// Returns once set (checked every 50 ms), or when the task is cancelled.
    public func wait() async {
        while !self.isSet && !Task.isCancelled { try? await Task.sleep(for: .milliseconds(50)) }
    }
}
