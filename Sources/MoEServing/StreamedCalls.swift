import GRPCCore

/// Serves a bidirectional stream whose messages are independent calls: `start` sees each message in arrival order
/// and returns its work (nil: the message needs none, e.g. a cancellation), which runs concurrently with the others;
/// each answer is written as soon as its work returns it (nil: no answer). The whole stream ends when gRPC cancels
/// the RPC (`cancelledWithRPC`).
public func answerConcurrently<Request: Sendable, Response: Sendable>(
    _ requests: RPCAsyncSequence<Request, any Error>, writer: RPCWriter<Response>,
    _ start: @escaping @Sendable (Request) -> (@Sendable () async -> Response?)?
) async throws {
    let (answers, answer) = AsyncStream<Response>.makeStream()
    try await cancelledWithRPC {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await message in answers { try await writer.write(message) }
            }
            defer { answer.finish() }
            try await withThrowingDiscardingTaskGroup { calls in
                for try await message in requests {
                    guard let work = start(message) else { continue }
                    calls.addTask {
                        if let response = await work() { answer.yield(response) }
                    }
                }
            }
            answer.finish()
            try await group.waitForAll()
        }
    }
}
