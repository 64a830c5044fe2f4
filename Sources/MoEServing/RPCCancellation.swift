import GRPCCore

/// gRPC tells a server that an RPC is cancelled (its client gone, its deadline passed, the server stopping) through
/// `ServerContext.cancellation`, not by cancelling the handler's task; work the handler started would run on. This
/// runs `operation` as a child task beside a watcher of that signal: when the RPC is cancelled the watcher ends and
/// the group cancels `operation`, so that the cancellation reaches everything it awaits (expert calls, batch queues,
/// compute steps). Structured: both children end with this call, and they inherit its task-locals.
public func cancelledWithRPC<Result: Sendable>(
    _ operation: @escaping @Sendable () async throws -> Result
) async throws -> Result {
    let (cancelled, signal) = AsyncStream<Never>.makeStream()
    return try await withRPCCancellationHandler {
        try await withThrowingTaskGroup(of: Result?.self) { group in
            group.addTask { try await operation() }
            // Ends when the RPC is cancelled (the stream finishes) or when the group cancels it.
            group.addTask {
                for await _ in cancelled {}
                return nil
            }
            while let next = try await group.next() {
                group.cancelAll()
                if let result = next { return result }
            }
            throw CancellationError()
        }
    } onCancelRPC: {
        signal.finish()
    }
}

/// Runs every unary handler under `cancelledWithRPC`. (A streaming handler's body runs after the interceptors: the
/// streaming handlers call `cancelledWithRPC` themselves.)
public struct RPCCancellationInterceptor: ServerInterceptor {
    public init() {}

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>, context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        // `next` is awaited to the end inside `cancelledWithRPC`, so it does not escape this call.
        try await withoutActuallyEscaping(next) { next in
            try await cancelledWithRPC { try await next(request, context) }
        }
    }
}
