import CoreMetrics
import MoECore
import MoEServing
import ServiceLifecycle

/// What a router calls with the experts the next layer will likely need (`--prefetch-next-layer`).
public typealias PrefetchHook = @Sendable ([ExpertAddress]) -> Void

/// The router's `Prefetch` hints, owned by one service: `send` queues a hint and returns at once (a hint must not
/// hold up the layer that sends it); `run()` sends each in a child task of its group, so that the hints in flight end
/// with the router rather than outliving it. With more than `capacity` waiting, the oldest is dropped: a hint only
/// starts a load that the `Compute` call would make anyway. Hints sent and failed (dropped ones included) are counted:
/// `moemesh_router_prefetch_hints_total`, `moemesh_router_prefetch_failures_total`.
public final class PrefetchHints: Service, Sendable {
    public typealias Hint = @Sendable () async throws -> Void

    private let hints: AsyncStream<Hint>
    private let continuation: AsyncStream<Hint>.Continuation
    private let sent: Counter?
    private let failed: Counter?

    public init(capacity: Int = 256, metrics: ServiceMetrics? = nil) {
        (self.hints, self.continuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(capacity))
        self.sent = metrics?.counter("moemesh_router_prefetch_hints_total")
        self.failed = metrics?.counter("moemesh_router_prefetch_failures_total")
    }

    /// Queues `hint`; false (and a failure counted) when a waiting hint was dropped to make room for it, or the
    /// service has stopped.
    @discardableResult
    public func send(_ hint: @escaping Hint) -> Bool {
        let queued =
            switch self.continuation.yield(hint) {
            case .enqueued: true
            case .dropped, .terminated: false
            @unknown default: false
            }
        if !queued { self.failed?.increment() }
        return queued
    }

    /// Sends the hints as they come, until graceful shutdown or cancellation; returns once those in flight ended.
    public func run() async {
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for await hint in self.hints {
                    group.addTask {
                        do {
                            try await hint()
                            self.sent?.increment()
                        } catch {
                            self.failed?.increment()
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            self.continuation.finish()
        }
    }
}
