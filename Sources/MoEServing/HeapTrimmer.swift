#if os(Linux)
    import CMalloc
#endif
import ServiceLifecycle

/// Gives the heap's free pages back to the system every `period` (glibc `malloc_trim`), when more than
/// `threshold` bytes are free.
///
/// A server's heap in use is flat under steady load (the router's stays at 22–24 MB; heaptrack, BENCHMARKS.md), but
/// the allocator keeps what it freed (`MemoryTuning` keeps large blocks on purpose), spread over its arenas: without
/// trimming, resident memory crept up for minutes after warm-up. Trimming also releases the pages of a free
/// prefill scratch block, which the next prefill touches again (a few ms per period at most).
public struct HeapTrimmer: Service {
    public let period: Duration
    public let threshold: Int

    public init(period: Duration = .seconds(5), threshold: Int = 8 << 20) {
        self.period = period
        self.threshold = threshold
    }

    public func run() async throws {
        #if os(Linux)
            // A period, not a wait for an event: the allocator has no event to wait for. Graceful shutdown cancels
            // the sleep, and the trimmer returns.
            try? await cancelWhenGracefulShutdown {
                while true {
                    try await Task.sleep(for: self.period)
                    if Self.freeBytes() > self.threshold { _ = malloc_trim(0) }
                }
            }
        #endif
    }

    /// Bytes free in the heap's arenas (glibc `mallinfo2().fordblks`).
    public static func freeBytes() -> Int {
        #if os(Linux)
            return Int(mallinfo2().fordblks)
        #else
            return 0
        #endif
    }
}
