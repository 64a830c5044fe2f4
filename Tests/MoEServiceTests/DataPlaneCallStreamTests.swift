import GRPCCore
import MoEDataPlane
import MoEProto
import MoEServing
import MoEWire
import Testing

/// Call streams while their server drains: refused (a router's clients go to another router) or served until the
/// caller stops calling (an expert's router may have no other replica yet).
@Suite("call streams while their server drains")
struct DataPlaneCallStreamTests {
    typealias Request = Moemesh_V1_ComputeStreamRequest
    typealias Response = Moemesh_V1_ComputeStreamResponse
    static let method = "/moemesh.test.Calls/Stream"

    /// Hands everything to a `DataPlaneCallStream` and says when the server's drain reached it.
    struct ObservedStream: DataPlaneStreamHandler {
        let inner: DataPlaneCallStream<Request, Response>
        let events: AsyncStream<String>.Continuation
        func receive(_ message: UnsafeRawBufferPointer) { self.inner.receive(message) }
        func inputEnded() { self.inner.inputEnded() }
        func cancelled() { self.inner.cancelled() }
        func draining() {
            self.events.yield("draining")
            self.inner.draining()
        }
    }

    /// Opens a stream to a server whose streams drain by `drain`, answers call 1, drains the server, sends call 2:
    /// the events seen, in order, until the stream ends.
    static func callAcrossTheDrain(_ drain: DataPlaneCallStream<Request, Response>.DrainPolicy) async throws
        -> [String]
    {
        let (events, sink) = AsyncStream<String>.makeStream()
        let server = try DataPlaneServer(
            configuration: .init(address: "127.0.0.1:0"),
            methods: [
                Self.method: .bidirectionalStream { _, stream in
                    let inner = DataPlaneCallStream<Request, Response>(
                        stream: stream, drain: drain,
                        refusal: Moemesh_V1_ComputeStreamResponse.refusing,
                        start: { message in .now { .with { $0.callID = message.callID } } })
                    return ObservedStream(inner: inner, events: sink)
                }
            ])
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await server.run() }
            let channel = try DataPlaneChannel(target: "127.0.0.1:\(server.port)")
            let stream = channel.openStream(
                Self.method,
                onMessage: { bytes in
                    let answer = (try? Response(serializedBytes: Array(bytes))) ?? Response()
                    sink.yield("answer \(answer.callID) " + (answer.hasError ? answer.error.message : "ok"))
                },
                onEnd: { sink.yield("end " + ($0.map { "\($0.code): \($0.message)" } ?? "ok")) })
            let call: (UInt64) throws -> Void = { id in
                stream.write(try Request.with { $0.callID = id }.serializedBytes())
            }
            var seen: [String] = []
            var iterator = events.makeAsyncIterator()
            try call(1)
            seen.append(await iterator.next() ?? "none")
            server.beginShutdown(grace: .seconds(60))
            seen.append(await iterator.next() ?? "none")
            try call(2)
            while let event = await iterator.next() {  // until the stream ends
                seen.append(event)
                if event.hasPrefix("end ") { break }
            }
            try await group.waitForAll()  // the server stopped once the stream ended: no 60 s grace waited out
            return seen
        }
    }

    @Test("serving until idle: a call made while the server drains is answered, then the idle stream ends")
    func servesUntilIdle() async throws {
        #expect(
            try await Self.callAcrossTheDrain(.serveUntilIdle(.milliseconds(200))) == [
                "answer 1 ok", "draining", "answer 2 ok", "end unavailable: the service is shutting down",
            ])
    }

    @Test("refusing: a call made while the server drains is refused UNAVAILABLE, and the stream ends")
    func refuses() async throws {
        let seen = try await Self.callAcrossTheDrain(.refuse)
        #expect(seen.prefix(2) == ["answer 1 ok", "draining"])
        // Nothing in flight: the stream ends at once, so call 2 is refused if it got there first, else finds the
        // stream over. Either way nothing is answered OK once the drain began.
        #expect(
            seen.dropFirst(2) == [
                "answer 2 the service is shutting down", "end unavailable: the service is shutting down",
            ]
                || seen.dropFirst(2) == ["end unavailable: the service is shutting down"])
    }
}
