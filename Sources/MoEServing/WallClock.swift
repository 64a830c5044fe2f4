#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The system's wall clock, for timestamps people read (logs, decision lists); durations use `ContinuousClock`.
public enum WallClock {
    /// Milliseconds since 1970-01-01 UTC.
    public static func unixMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }
}
