/// A flag set once to ask something to stop, for what must stop in a chosen order rather than when its task is
/// cancelled (cancelling a NIO server with connections still queued traps inside SwiftNIO).
public final class StopSignal: Sendable {
    private let flag = SetOnce<Void>()

    public init() {}

    public func set() { self.flag.set() }

    public var isSet: Bool { self.flag.value != nil }

    /// Returns once set, or when the task is cancelled.
    public func wait() async { _ = await self.flag.wait() }
}
