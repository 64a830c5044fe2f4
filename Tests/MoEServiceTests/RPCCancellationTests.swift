import GRPCCore
import MoEServing
import Testing

@Suite("gRPC's cancellation of an RPC reaches the work its handler started")
struct RPCCancellationTests {
    @Test("an RPC cancelled mid-call cancels the operation, which ends with the call; one that finishes is untouched")
    func cancellationReachesTheOperation() async throws {
        let (started, began) = AsyncStream<Void>.makeStream()
        await withServerContextRPCCancellationHandle { handle in
            let call = Task {
                try await cancelledWithRPC {
                    began.yield()
                    // Waits for nothing but its cancellation.
                    let (never, _) = AsyncStream<Never>.makeStream()
                    for await _ in never {}
                    try Task.checkCancellation()
                    return "not cancelled"
                }
            }
            var iterator = started.makeAsyncIterator()
            await iterator.next()
            handle.cancel()
            await #expect(throws: CancellationError.self) { try await call.value }
        }
        let answer = try await withServerContextRPCCancellationHandle { _ in
            try await cancelledWithRPC { "done" }
        }
        #expect(answer == "done")
    }
}
