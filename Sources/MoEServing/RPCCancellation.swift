import GRPCCore

/// gRPC tells a server that an RPC is cancelled (its client gone, its deadline passed, the server stopping) through
/// `ServerContext.cancellation`, not by cancelling the handler's task; work the handler started would run on. This
/// runs `operation` in a task that is cancelled then, so that the cancellation reaches everything it awaits: expert
/// calls, batch queues, compute steps.
public func cancelledWithRPC<Result: Sendable>(
    _ operation: @escaping @Sendable () async throws -> Result
) async throws -> Result {
    // A task of its own (it inherits the task-locals): the cancellation handler must be able to cancel it from any
    // thread, which a task group, not being Sendable, cannot offer.
    let task = Task { try await operation() }
    return try await withTaskCancellationHandler {
        try await withRPCCancellationHandler {
            try await task.value
        } onCancelRPC: {
            task.cancel()
        }
    } onCancel: {
        task.cancel()
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
