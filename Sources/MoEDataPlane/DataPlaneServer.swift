import CGRPCBridge
import GRPCCore
import MoECore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A gRPC server on the C++ core: every call of every method reaches `methods` by its path
/// (`/moemesh.v1.Expert/Compute`), its request as bytes; what a method answers is sent as bytes. Messages are encoded
/// and decoded by the methods (SwiftProtobuf), never by the core.
///
/// Inline methods run on the core's thread that read the request (no task, no hop: an expert's decode FFN); async
/// methods run as child tasks of `run()`, which must be running for them to be answered.
public final class DataPlaneServer: Sendable {
    public struct Configuration: Sendable {
        /// `host:port` (port 0: any free port) or `unix:/path`.
        public var address: String
        /// A second address serving the same methods (an expert's Unix socket beside its TCP port).
        public var alsoAddress: String?
        /// Largest message accepted by the core, in bytes (services check their own, lower limit with a clearer
        /// message before decoding).
        public var maxReceiveMessageBytes: Int = 4 << 20
        public var maxSendMessageBytes: Int = 4 << 20
        /// Calls one connection may have open at once; one more is refused RESOURCE_EXHAUSTED at once, never the
        /// connection.
        public var maxConcurrentStreams: Int = 1024
        /// Pings on idle connections find a peer that stopped answering within `keepaliveTime + keepaliveTimeout`.
        public var keepaliveTime: Duration = .seconds(10)
        public var keepaliveTimeout: Duration = .seconds(5)
        /// How often clients may ping.
        public var minClientPingInterval: Duration = .seconds(5)
        /// Connections older than this are closed gracefully (their calls finish) so that clients spread over
        /// servers added later; nil: never.
        public var maxConnectionAge: Duration?
        public var tls: DataPlaneTLS?

        public init(address: String, tls: DataPlaneTLS? = nil) {
            self.address = address
            self.tls = tls
        }
    }

    /// Decides, before a method runs, whether a call may proceed (tokens and roles): an error refuses it.
    public typealias Admission = @Sendable (DataPlaneCallContext) -> RPCError?

    let methods: [String: DataPlaneMethod]
    let admission: Admission?
    /// Async work of calls: an async method's call, or work a stream's handler started.
    enum Job: Sendable {
        case call(DataPlaneServerCall)
        case work(DataPlaneServerCall, @Sendable () async -> Void)
    }

    private let jobs: AsyncStream<Job>.Continuation
    private let jobStream: AsyncStream<Job>
    private let handle: Mutex<CorePointer?>
    /// Streamed calls open now, told when the server begins to drain.
    private let streams = Mutex<[ObjectIdentifier: DataPlaneServerCall]>([:])
    private let boundPort = Atomic<Int>(0)

    /// The TCP port listened on (the one chosen for port 0); 0 for a Unix socket.
    public var port: Int { self.boundPort.load(ordering: .relaxed) }

    /// Starts listening.
    public init(
        configuration: Configuration, methods: [String: DataPlaneMethod], admission: Admission? = nil
    ) throws {
        self.methods = methods
        self.admission = admission
        (self.jobStream, self.jobs) = AsyncStream.makeStream()
        self.handle = Mutex(nil)
        let unmanaged = Unmanaged.passUnretained(self).toOpaque()
        var error = [CChar](repeating: 0, count: 512)
        let server = configuration.address.withCString { address in
            withOptionalCString(configuration.alsoAddress) { alsoAddress in
                withOptionalTLS(configuration.tls) { tls in
                    var options = mm_server_options()
                    options.address = address
                    options.also_address = alsoAddress
                    options.max_receive_message_bytes = Int32(clamping: configuration.maxReceiveMessageBytes)
                    options.max_send_message_bytes = Int32(clamping: configuration.maxSendMessageBytes)
                    options.max_concurrent_streams = Int32(clamping: configuration.maxConcurrentStreams)
                    options.keepalive_time_ms = Int32(clamping: Int64(configuration.keepaliveTime.milliseconds))
                    options.keepalive_timeout_ms = Int32(clamping: Int64(configuration.keepaliveTimeout.milliseconds))
                    options.keepalive_min_client_ping_interval_ms = Int32(
                        clamping: Int64(configuration.minClientPingInterval.milliseconds))
                    options.max_connection_age_ms = Int32(
                        clamping: Int64(configuration.maxConnectionAge?.milliseconds ?? 0))
                    options.tls = tls
                    options.callbacks = mm_server_callbacks(
                        context: unmanaged, on_call: serverOnCall, on_message: serverOnMessage,
                        on_half_close: serverOnHalfClose, on_cancel: serverOnCancel, on_done: serverOnDone)
                    return mm_server_start(&options, &error, error.count)
                }
            }
        }
        guard let server else {
            throw DataPlaneSetupError(error.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
        self.handle.withLock { $0 = CorePointer(pointer: server) }
        self.boundPort.store(Int(mm_server_port(server)), ordering: .relaxed)
    }

    /// A server nobody shut down stops with it: the core holds this object unretained, as its callbacks' context.
    deinit {
        if let handle = self.handle.withLock({ $0 }) {
            mm_server_shutdown(handle.pointer, 0, "the service is shutting down")
        }
    }

    /// Runs the async methods' calls and the work streams start, each as a child task, until `shutdown` has
    /// finished every call.
    public func run() async {
        await withDiscardingTaskGroup { group in
            for await job in self.jobStream {
                switch job {
                case .call(let call): group.addTask { await call.runAsync() }
                case .work(let call, let work): group.addTask { await call.runStreamWork(work) }
                }
            }
        }
    }

    /// Refuses new calls (UNAVAILABLE, and a GOAWAY that sends clients elsewhere), gives the calls in flight
    /// `grace` to finish, finishes the rest UNAVAILABLE with `message`, and returns once every call is over. The
    /// waiting happens on a thread of its own, not on Swift's cooperative pool.
    public func shutdown(grace: Duration, message: String = "the service is shutting down") async {
        guard let stop = self.takeStop(grace: grace, message: message) else { return }
        await runOnOwnThread(stop)
    }

    /// `shutdown` without waiting for it: `run()` returns once it is done.
    public func beginShutdown(grace: Duration, message: String = "the service is shutting down") {
        guard let stop = self.takeStop(grace: grace, message: message) else { return }
        startThread(stop)
    }

    /// The blocking work of stopping, once (nil when already stopped or stopping): open streams are told to
    /// drain first.
    private func takeStop(grace: Duration, message: String) -> (@Sendable () -> Void)? {
        guard
            let handle = self.handle.withLock({ handle in
                defer { handle = nil }; return handle
            })
        else { return nil }
        let milliseconds = Int64(grace.milliseconds)
        return {
            for call in self.streams.withLock({ Array($0.values) }) { call.drain() }
            message.withCString { mm_server_shutdown(handle.pointer, milliseconds, $0) }
            self.jobs.finish()
        }
    }

    func streamOpened(_ call: DataPlaneServerCall) { self.streams.withLock { $0[ObjectIdentifier(call)] = call } }
    func streamEnded(_ call: DataPlaneServerCall) {
        _ = self.streams.withLock { $0.removeValue(forKey: ObjectIdentifier(call)) }
    }

    func enqueue(_ job: Job) { self.jobs.yield(job) }
}

/// What a method does with its calls.
public enum DataPlaneMethod: Sendable {
    /// One request, one answer, computed on the core's thread that read the request: synchronous work that is
    /// worth no hop (an expert's FFN). A thrown error is the call's status (`RPCError(answering:)`).
    case inlineUnary(@Sendable (_ request: UnsafeRawBufferPointer, _ context: DataPlaneCallContext) throws -> [UInt8])
    /// One request, one answer, from an async function run as a child task of the server's `run()`; cancelled when
    /// the call is (its client, its deadline, the server stopping).
    case unary(@Sendable (_ request: [UInt8], _ context: DataPlaneCallContext) async throws -> [UInt8])
    /// One request, one answer: `now` answers on the core's thread when it can (an expert whose device is free),
    /// else returns nil and `later` answers as `unary` does.
    case unaryInlineFirst(
        now: @Sendable (_ request: UnsafeRawBufferPointer, _ context: DataPlaneCallContext) throws -> [UInt8]?,
        later: @Sendable (_ request: [UInt8], _ context: DataPlaneCallContext) async throws -> [UInt8])
    /// A bidirectional stream: `open` makes the call's handler, which hears each message on the core's thread and
    /// answers through the stream (from any thread, at any time) until it finishes it.
    case bidirectionalStream(
        @Sendable (_ context: DataPlaneCallContext, _ stream: DataPlaneServerStream) -> any DataPlaneStreamHandler)
}

/// Hears one streamed call. Each function runs on a core thread and should return quickly (or do the call's
/// synchronous work: the next message is read once `receive` returns).
public protocol DataPlaneStreamHandler: Sendable {
    func receive(_ message: UnsafeRawBufferPointer)
    /// The client sends nothing more; the handler finishes the stream once its answers are written.
    func inputEnded()
    /// The call was cancelled; whatever the handler still writes is dropped.
    func cancelled()
    /// The server is shutting down: the handler answers what it has in flight, refuses what comes next (or serves
    /// on until its caller stops, when the caller may have nowhere else to go) and finishes the stream; what is
    /// left at the end of the grace period is finished UNAVAILABLE.
    func draining()
}

extension DataPlaneStreamHandler {
    public func draining() {}
}

/// What a server knows of a call when it starts.
public struct DataPlaneCallContext: Sendable {
    /// `/package.Service/Method`.
    public let method: String
    public let metadata: Metadata
    /// The client's deadline, if it set one.
    public let deadline: ContinuousClock.Instant?
    /// The client's address as the core names it (`ipv4:127.0.0.1:51234`).
    public let peer: String

    public init(method: String, metadata: Metadata, deadline: ContinuousClock.Instant?, peer: String) {
        self.method = method
        self.metadata = metadata
        self.deadline = deadline
        self.peer = peer
    }
}

/// The answering side of a streamed call: write answers from any thread; finish once.
public struct DataPlaneServerStream: Sendable {
    let call: DataPlaneServerCall

    public func write(_ bytes: [UInt8]) { self.call.write(bytes) }
    /// Ends the call: OK, or with `error`'s status.
    public func finish(_ error: RPCError? = nil) { self.call.finish(error) }
    /// Runs `work` as a child task of the server's `run()`, cancelled when this call ends.
    public func run(_ work: @escaping @Sendable () async -> Void) { self.call.startStreamWork(work) }
}

/// Runs `work` on a new thread (blocking work that must not hold one of Swift's cooperative threads) and returns
/// when it has, and the thread is gone.
func runOnOwnThread(_ work: @escaping @Sendable () -> Void) async {
    let thread = await withCheckedContinuation { (continuation: CheckedContinuation<ThreadHandle?, Never>) in
        startThread(detached: false) { ownThread in
            work()
            continuation.resume(returning: ownThread ? ThreadHandle(thread: pthread_self()) : nil)
        }
    }
    // The thread has done its work and is returning: joining it takes no time.
    if let thread { pthread_join(thread.thread, nil) }
}

/// A thread to join.
struct ThreadHandle: @unchecked Sendable {
    let thread: pthread_t
}

/// Runs `work` on a new, detached thread (on this one if none can be made).
func startThread(_ work: @escaping @Sendable () -> Void) {
    startThread(detached: true) { _ in work() }
}

/// Runs `work` on a new thread (detached, or for the caller to join), telling it whether it runs on one (it runs on
/// the calling thread if none can be made).
private func startThread(detached: Bool, _ work: @escaping @Sendable (_ ownThread: Bool) -> Void) {
    final class Job {
        let work: @Sendable (Bool) -> Void
        init(_ work: @escaping @Sendable (Bool) -> Void) { self.work = work }
    }
    let job = Unmanaged.passRetained(Job(work)).toOpaque()
    var thread = pthread_t()
    let started = pthread_create(
        &thread, nil,
        { argument in
            Unmanaged<Job>.fromOpaque(argument!).takeRetainedValue().work(true)
            return nil
        }, job)
    if started != 0 {
        Unmanaged<Job>.fromOpaque(job).takeRetainedValue().work(false)
    } else if detached {
        pthread_detach(thread)
    }
}
