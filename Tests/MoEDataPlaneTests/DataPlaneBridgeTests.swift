import GRPCCore
import MoEDataPlane
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The bridge to gRPC's C++ core: calls both ways over loopback, statuses, metadata, deadlines, cancellation in
/// both directions, shutdown with calls in flight, and nothing leaked.
@Suite("Data plane bridge (gRPC C++ core)", .timeLimit(.minutes(2)))
struct DataPlaneBridgeTests {
    static let echo = "/test.Echo/Unary"
    static let echoInline = "/test.Echo/Inline"
    static let wait = "/test.Echo/WaitForCancel"
    static let stream = "/test.Echo/Stream"

    /// Announces what the server saw, in order, for a test to wait on.
    final class Events: Sendable {
        let stream: AsyncStream<String>
        let sink: AsyncStream<String>.Continuation
        init() { (self.stream, self.sink) = AsyncStream.makeStream() }
        func next() async -> String? {
            var iterator = self.stream.makeAsyncIterator()
            return await iterator.next()
        }
    }

    struct EchoStream: DataPlaneStreamHandler {
        let stream: DataPlaneServerStream
        let events: Events
        func receive(_ message: UnsafeRawBufferPointer) {
            if Array(message) == Array("end".utf8) {
                self.stream.finish(RPCError(code: .aborted, message: "the server ended the stream"))
            } else {
                self.stream.write(Array(message.reversed()))
            }
        }
        func inputEnded() { self.stream.finish() }
        func cancelled() { self.events.sink.yield("stream cancelled") }
    }

    static func methods(_ events: Events) -> [String: DataPlaneMethod] {
        [
            Self.echo: .unary { request, context in
                events.sink.yield(
                    "metadata x-test=\(context.metadata[stringValues: "x-test"].first { _ in true } ?? "")")
                if request == Array("fail".utf8) { throw RPCError(code: .notFound, message: "no such thing: fail") }
                if request == Array("other".utf8) { throw SomeError() }
                return request + request
            },
            Self.echoInline: .inlineUnary { request, context in
                if let deadline = context.deadline { events.sink.yield("deadline \(deadline - .now)") }
                return Array(request) + [1]
            },
            Self.wait: .unary { _, _ in
                events.sink.yield("waiting")
                // Waits for nothing but its cancellation: a stream that never yields ends when the task is cancelled.
                let (never, _) = AsyncStream<Never>.makeStream()
                for await _ in never {}
                events.sink.yield("handler cancelled")
                throw CancellationError()
            },
            Self.stream: .bidirectionalStream { _, stream in EchoStream(stream: stream, events: events) },
        ]
    }

    struct SomeError: Error, CustomStringConvertible {
        var description: String { "some error the handler did not map" }
    }

    /// A server and a channel to it for `body`; the server is shut down afterwards.
    static func withServer<Result>(
        events: Events, admission: DataPlaneServer.Admission? = nil,
        _ body: (DataPlaneServer, DataPlaneChannel) async throws -> Result
    ) async throws -> Result {
        let server = try DataPlaneServer(
            configuration: .init(address: "127.0.0.1:0"), methods: Self.methods(events), admission: admission)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await server.run() }
            let channel = try DataPlaneChannel(target: "127.0.0.1:\(server.port)")
            let result = try await body(server, channel)
            await server.shutdown(grace: .zero)
            try await group.waitForAll()
            return result
        }
    }

    @Test("unary calls, inline and in a task, carry bytes and metadata both ways")
    func unary() async throws {
        let events = Events()
        try await Self.withServer(events: events) { _, channel in
            var metadata = Metadata()
            metadata.addString("42", forKey: "x-test")
            let answer = try await channel.unary(Self.echo, request: [1, 2, 3], metadata: metadata)
            #expect(answer == [1, 2, 3, 1, 2, 3])
            #expect(await events.next() == "metadata x-test=42")
            let inline = try await channel.unary(Self.echoInline, request: [9])
            #expect(inline == [9, 1])
            let empty = try await channel.unary(Self.echoInline, request: [])
            #expect(empty == [1])
        }
    }

    @Test(
        "with a maximum connection age the server closes a client's connection gracefully: it reconnects, no call fails"
    )
    func maximumConnectionAge() async throws {
        var configuration = DataPlaneServer.Configuration(address: "127.0.0.1:0")
        configuration.maxConnectionAge = .seconds(1)
        let peer = "/test.Echo/Peer"
        let server = try DataPlaneServer(
            configuration: configuration,
            methods: [peer: .inlineUnary { _, context in Array(context.peer.utf8) }])
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await server.run() }
            let channel = try DataPlaneChannel(target: "127.0.0.1:\(server.port)")
            // The client's port names its connection. Calls follow one another, each waiting for its answer, until
            // one arrives on a second connection; without the age limit every call stays on the first. The bound
            // only limits how long a broken build takes to fail.
            var peers: Set<String> = []
            let clock = ContinuousClock(), giveUp = clock.now + .seconds(60)
            while peers.count < 2 && clock.now < giveUp {
                peers.insert(String(decoding: try await channel.unary(peer, request: []), as: UTF8.self))
            }
            #expect(peers.count >= 2, "every call arrived on \(peers)")
            await server.shutdown(grace: .zero)
            try await group.waitForAll()
        }
    }

    @Test("errors: a handler's status, another error as INTERNAL naming it, an unknown method, a refused admission")
    func errors() async throws {
        let events = Events()
        try await Self.withServer(
            events: events,
            admission: { context in
                context.metadata[stringValues: "authorization"].first { _ in true } == "no"
                    ? RPCError(code: .unauthenticated, message: "expected a token, got 'no'") : nil
            }
        ) { _, channel in
            let notFound = await #expect(throws: RPCError.self) {
                _ = try await channel.unary(Self.echo, request: Array("fail".utf8))
            }
            #expect(notFound?.code == .notFound)
            #expect(notFound?.message == "no such thing: fail")
            let other = await #expect(throws: RPCError.self) {
                _ = try await channel.unary(Self.echo, request: Array("other".utf8))
            }
            #expect(other?.code == .internalError)
            #expect(other?.message == "some error the handler did not map")
            let unknown = await #expect(throws: RPCError.self) {
                _ = try await channel.unary("/test.Echo/Nothing", request: [])
            }
            #expect(unknown?.code == .unimplemented)
            #expect(unknown?.message == "method '/test.Echo/Nothing' is not served here")
            var metadata = Metadata()
            metadata.addString("no", forKey: "authorization")
            let refused = await #expect(throws: RPCError.self) {
                _ = try await channel.unary(Self.echo, request: [1], metadata: metadata)
            }
            #expect(refused?.code == .unauthenticated)
            #expect(refused?.message == "expected a token, got 'no'")
        }
    }

    @Test("the client's deadline reaches the server's method, and a deadline that passes cancels its task")
    func deadlines() async throws {
        let events = Events()
        try await Self.withServer(events: events) { _, channel in
            let deadline = ContinuousClock.now + .seconds(60)
            _ = try await channel.unary(Self.echoInline, request: [], deadline: deadline)
            let seen = await events.next() ?? ""
            // The remaining time the server saw: at most the client's 60 s, and more than half of it.
            let seconds = Double(seen.split(separator: " ")[1]) ?? -1
            #expect(seen.hasPrefix("deadline ") && seconds > 30 && seconds <= 60.5, "server saw: \(seen)")

            let error = await #expect(throws: RPCError.self) {
                _ = try await channel.unary(Self.wait, request: [], deadline: .now + .seconds(1))
            }
            #expect(error?.code == .deadlineExceeded)
            #expect(await events.next() == "waiting")
            #expect(await events.next() == "handler cancelled")
        }
    }

    @Test("a call cancelled by the Swift client is cancelled at the server's method")
    func clientCancellation() async throws {
        let events = Events()
        try await Self.withServer(events: events) { _, channel in
            let call = Task { try await channel.unary(Self.wait, request: []) }
            #expect(await events.next() == "waiting")
            call.cancel()
            let error = await #expect(throws: RPCError.self) { try await call.value }
            #expect(error?.code == .cancelled)
            #expect(await events.next() == "handler cancelled")
        }
    }

    @Test("streams: answers in order, an error from the server ends the client's stream, a cancel reaches the server")
    func streams() async throws {
        let events = Events()
        try await Self.withServer(events: events) { _, channel in
            let (answers, answer) = AsyncStream<String>.makeStream()
            let stream = channel.openStream(
                Self.stream, onMessage: { answer.yield("message \(Array($0))") },
                onEnd: { answer.yield("end \($0.map { "\($0.code): \($0.message)" } ?? "ok")") })
            var iterator = answers.makeAsyncIterator()
            stream.write([1, 2])
            stream.write([3, 4, 5])
            #expect(await iterator.next() == "message [2, 1]")
            #expect(await iterator.next() == "message [5, 4, 3]")
            stream.closeSend()
            #expect(await iterator.next() == "end ok")

            let ended = channel.openStream(
                Self.stream, onMessage: { _ in },
                onEnd: { answer.yield("end \($0.map { "\($0.code): \($0.message)" } ?? "ok")") })
            ended.write(Array("end".utf8))
            #expect(await iterator.next() == "end aborted: the server ended the stream")

            let cancelled = channel.openStream(
                Self.stream, onMessage: { answer.yield("message \(Array($0))") },
                onEnd: { answer.yield("end \($0.map { "\($0.code)" } ?? "ok")") })
            cancelled.write([7])
            #expect(await iterator.next() == "message [7]")
            cancelled.cancel()
            #expect(await iterator.next() == "end cancelled")
            #expect(await events.next() == "stream cancelled")
        }
    }

    @Test("a server stopped with calls in flight answers them UNAVAILABLE and leaks no object or thread")
    func shutdownWithCallsInFlight() async throws {
        // In a process of its own: the counts are the process's, and other tests make servers and threads. The child
        // prints what it found wrong (or "as expected"), so that a failure says what.
        let result = await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) {
            let report = try await DataPlaneBridgeTests.stopServerWithCallsInFlight()
            print(report ?? "as expected")
        }
        let report = result.map { String(decoding: $0.standardOutputContent, as: UTF8.self) } ?? ""
        #expect(report.hasSuffix("as expected\n"), "\(report)")
    }

    /// Stops servers with calls in flight, several times; returns the first thing found wrong, nil if none.
    static func stopServerWithCallsInFlight() async throws -> String? {
        struct Wrong: Error { let message: String }
        func require(_ condition: Bool, _ message: @autoclosure () -> String) throws {
            if !condition { throw Wrong(message: message()) }
        }
        do {
            try await Self.stopServersChecking(require)
            return nil
        } catch let wrong as Wrong {
            return wrong.message
        }
    }

    static func stopServersChecking(_ require: (Bool, @autoclosure () -> String) throws -> Void) async throws {
        // gRPC's own threads live while any gRPC object does (and end some time after the last one goes): a channel
        // kept open across the check holds them, and a first server and call start them.
        let keeper = try DataPlaneChannel(target: "127.0.0.1:1")
        defer { withExtendedLifetime(keeper) {} }
        try await Self.withServer(events: Events()) { _, channel in _ = try await channel.unary(Self.echo, request: [1])
        }
        let objectsBefore = DataPlaneLiveObjects.now
        let threadsBefore = Self.threadNames()

        let cycles = 4
        for _ in 0..<cycles {
            let events = Events()
            let server = try DataPlaneServer(
                configuration: .init(address: "127.0.0.1:0"), methods: Self.methods(events))
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await server.run() }
                let channel = try DataPlaneChannel(target: "127.0.0.1:\(server.port)")
                let calls = (0..<3).map { _ in
                    Task { () -> RPCError? in
                        do {
                            _ = try await channel.unary(Self.wait, request: [])
                            return nil
                        } catch {
                            return error as? RPCError
                        }
                    }
                }
                for _ in 0..<3 { try require(await events.next() == "waiting", "a call did not reach its method") }
                let (streamEvents, streamEvent) = AsyncStream<RPCError?>.makeStream()
                let stream = channel.openStream(
                    Self.stream, onMessage: { _ in streamEvent.yield(nil) }, onEnd: { streamEvent.yield($0) })
                stream.write([1])
                var ends = streamEvents.makeAsyncIterator()
                try require(await ends.next() == .some(nil), "the stream's first message was not answered")
                await server.shutdown(grace: .milliseconds(100), message: "the test stops this server")
                for call in calls {
                    let error = await call.value
                    try require(
                        error?.code == .unavailable && error?.message == "the test stops this server",
                        "a call in flight ended with \(String(describing: error)), expected UNAVAILABLE")
                }
                let streamError = await ends.next() ?? nil
                try require(
                    streamError?.code == .unavailable,
                    "a stream in flight ended with \(String(describing: streamError))")
                for _ in 0..<3 {
                    try require(await events.next() == "handler cancelled", "a method's task was not cancelled")
                }
                // A new call to the stopped server fails at once.
                do {
                    _ = try await channel.unary(Self.echo, request: [], waitForReady: false)
                    try require(false, "a call to a stopped server was answered")
                } catch let error as RPCError {
                    try require(error.code == .unavailable, "a call to a stopped server failed with \(error)")
                }
                try await group.waitForAll()
            }
        }
        // Servers, server calls, channels and unary calls are gone once their owners are (a stream's last reference
        // may go on the core's thread just after it ends, so streams are not counted here).
        var objectsAfter = DataPlaneLiveObjects.now
        objectsAfter.clientCalls = objectsBefore.clientCalls
        try require(objectsAfter == objectsBefore, "bridge objects before: \(objectsBefore); after: \(objectsAfter)")
        // gRPC's global pools (executor, timers, resolver, event engine) grow on demand up to bounds of their own
        // (the executor to 2 × cores): left out. Every other thread (the bridge's, Swift's, a per-server thread of
        // the core) must be as before.
        let pools: Set<String> = [
            "default-executo", "grpc_global_tim", "resolver-execut", "event_engine", "timer_manager",
        ]
        let threadsAfter = Self.threadNames()
        try require(
            threadsAfter.filter { !pools.contains($0) }.count <= threadsBefore.filter { !pools.contains($0) }.count,
            "threads before: \(threadsBefore.sorted()); after \(cycles) servers: \(threadsAfter.sorted())")
    }

    /// The names of this process's threads.
    static func threadNames() -> [String] {
        guard let directory = opendir("/proc/self/task") else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            let fd = open("/proc/self/task/\(name)/comm", O_RDONLY)
            var buffer = [UInt8](repeating: 0, count: 64)
            let n = read(fd, &buffer, 64)
            close(fd)
            names.append(String(decoding: buffer.prefix(max(0, n)).filter { $0 != 10 }, as: UTF8.self))
        }
        return names
    }

}
