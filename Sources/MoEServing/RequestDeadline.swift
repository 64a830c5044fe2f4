import GRPCCore

/// The deadline of the request a task works for, so that every call made on its behalf gets what is left of it
/// rather than a fixed timeout. One type from the client to the expert: in process a `ContinuousClock.Instant`
/// (`current`); on the wire the `grpc-timeout` of a unary call (gRPC's core reads and writes it) or the
/// `timeout_ms` of a stream's message (`after(milliseconds:)` reads it, `wireMilliseconds(until:)` writes it).
public enum RequestDeadline {
    /// The deadline of the request being served, if its client set one.
    @TaskLocal public static var current: ContinuousClock.Instant?

    /// The earlier of two optional deadlines.
    public static func earliest(_ a: ContinuousClock.Instant?, _ b: ContinuousClock.Instant?) -> ContinuousClock
        .Instant?
    {
        switch (a, b) {
        case (nil, nil): nil
        case (let a?, nil): a
        case (nil, let b?): b
        case (let a?, let b?): min(a, b)
        }
    }

    /// The later of two deadlines; nil (none) wins.
    public static func latest(_ a: ContinuousClock.Instant?, _ b: ContinuousClock.Instant?) -> ContinuousClock.Instant?
    {
        guard let a, let b else { return nil }
        return max(a, b)
    }
}

extension RequestDeadline {
    /// `operation`, cancelled at `deadline` (then `DEADLINE_EXCEEDED`), with `current` bound to the earlier of
    /// `deadline` and the deadline in force; without a deadline, `operation` as it is.
    public static func enforce<Result: Sendable>(
        _ deadline: ContinuousClock.Instant?, _ operation: @escaping @Sendable () async throws -> Result
    ) async throws -> Result {
        guard let deadline else { return try await operation() }
        return try await Self.$current.withValue(Self.earliest(deadline, Self.current)) {
            try await withThrowingTaskGroup(of: Result?.self) { group in
                group.addTask { try await operation() }
                group.addTask {
                    try await Task.sleep(until: deadline, clock: .continuous)  // the deadline itself
                    return nil
                }
                defer { group.cancelAll() }
                guard let result = try await group.next()! else {
                    throw RPCError(
                        code: .deadlineExceeded, message: "the request's deadline passed before it was answered")
                }
                return result
            }
        }
    }

    /// The deadline a stream message's `timeout_ms` names: `milliseconds` from now; nil for 0 (none).
    public static func after(milliseconds: UInt32) -> ContinuousClock.Instant? {
        milliseconds == 0 ? nil : .now + .milliseconds(Int64(milliseconds))
    }

    /// `deadline` as a stream message's `timeout_ms`: the milliseconds left, rounded up, at least 1 (0 says none).
    public static func wireMilliseconds(until deadline: ContinuousClock.Instant) -> UInt32 {
        let milliseconds = (deadline - .now).milliseconds.rounded(.up)
        return UInt32(min(max(milliseconds, 1), Double(UInt32.max)))
    }
}
