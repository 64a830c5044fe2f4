import GRPCCore
import MoEProto

/// Answers every `Echo` with the tensor it was sent: the floor for one gRPC hop.
public struct EchoService: Moemesh_V1_Bench.SimpleServiceProtocol {
    public init() {}

    public func echo(request: Moemesh_V1_EchoRequest, context: ServerContext) async throws -> Moemesh_V1_EchoResponse {
        var response = Moemesh_V1_EchoResponse()
        response.tensor = request.tensor
        return response
    }

    public func echoStream(
        request: RPCAsyncSequence<Moemesh_V1_EchoRequest, any Error>, response: RPCWriter<Moemesh_V1_EchoResponse>,
        context: ServerContext
    ) async throws {
        for try await message in request {
            try await response.write(.with { $0.tensor = message.tensor })
        }
    }
}

/// A bidirectional stream used one message at a time, as a model runner uses `ForwardStream` (one layer after
/// another): `send` writes a message and returns the next answer.
struct SerialStream<Request: Sendable, Response: Sendable> {
    /// The answers' iterator, touched by one caller at a time (`send` is awaited before the next one).
    private final class Answers: @unchecked Sendable {
        var iterator: AsyncStream<Response>.Iterator
        init(_ stream: AsyncStream<Response>) { self.iterator = stream.makeAsyncIterator() }
    }

    /// Opens the stream with `open` (which runs it: sends `requests`, hands each answer to `deliver`), runs `body`
    /// with it, then closes it.
    static func with<Result>(
        open:
            @escaping @Sendable (
                _ requests: AsyncStream<Request>, _ deliver: @escaping @Sendable (Response) -> Void
            ) async throws -> Void,
        _ body: (_ send: @Sendable (Request) async throws -> Response) async throws -> Result
    ) async throws -> Result {
        let (requests, requestSink) = AsyncStream<Request>.makeStream()
        let (answers, answerSink) = AsyncStream<Response>.makeStream()
        let box = Answers(answers)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { answerSink.finish() }
                try await open(requests) { answerSink.yield($0) }
            }
            defer { requestSink.finish() }
            let result = try await body { request in
                requestSink.yield(request)
                guard let answer = await box.iterator.next() else {
                    throw RPCError(code: .unavailable, message: "the stream ended")
                }
                return answer
            }
            requestSink.finish()
            try await group.waitForAll()
            return result
        }
    }
}
