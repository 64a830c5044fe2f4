import ServiceLifecycle

/// The router's `Prefetch` hints, owned by one service: `send` queues a hint and returns at once (a hint must not
/// hold up the layer that sends it); `run()` sends each in a child task of its group, so that the hints in flight end
/// with the router rather than outliving it. With more than `capacity` waiting, the oldest is dropped: a hint only
/// starts a load that the `Compute` call would make anyway.
public final class PrefetchHints: Service, Sendable {
    public typealias Hint = @Sendable () async -> Void

    private let hints: AsyncStream<Hint>
    private let continuation: AsyncStream<Hint>.Continuation

    public init(capacity: Int = 256) {
        (self.hints, self.continuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(capacity))
    }

    /// Queues `hint`; false when a waiting hint was dropped to make room for it, or the service has stopped.
    @discardableResult
    public func send(_ hint: @escaping Hint) -> Bool {
        switch self.continuation.yield(hint) {
        case .enqueued: true
        case .dropped, .terminated: false
        @unknown default: false
        }
    }

    /// Sends the hints as they come, until graceful shutdown or cancellation; returns once those in flight ended.
    public func run() async {
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for await hint in self.hints { group.addTask { await hint() } }
            }
        } onGracefulShutdown: {
            self.continuation.finish()
        }
    }
}
