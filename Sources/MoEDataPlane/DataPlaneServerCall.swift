import CGRPCBridge
import GRPCCore
import Synchronization

/// One call on a `DataPlaneServer`, from `on_call` to `on_done`: holds the core's call (a reference, given back
/// when this object goes) and routes its events to the method.
final class DataPlaneServerCall: Sendable {
    enum Kind: Sendable {
        case refused
        /// A unary method, as served.
        case unary(DataPlaneMethod)
        /// A stream, with its handler.
        case stream(any DataPlaneStreamHandler)
    }

    private struct State {
        var kind: Kind = .refused
        var requests = 0
        /// The async request, until its task takes it.
        var pendingRequest: [UInt8]?
        var cancelled = false
        /// The task running an async method, while it runs (cancelled from the core's thread).
        var runningTask: RunningTask?
        /// Tasks running a stream's work, while they run.
        var streamTasks: [Int: RunningTask] = [:]
        var nextStreamTask = 0
    }

    /// The core's call (thread-safe functions).
    private nonisolated(unsafe) let call: OpaquePointer
    private let server: DataPlaneServer
    let context: DataPlaneCallContext
    private let state: Mutex<State>

    init(call: OpaquePointer, server: DataPlaneServer, context: DataPlaneCallContext) {
        self.call = call
        self.server = server
        self.context = context
        self.state = Mutex(State())
    }

    deinit { mm_server_call_release(self.call) }

    /// Picks the method (or refuses the call) once the call is known.
    func start() {
        guard let method = self.server.methods[self.context.method] else {
            self.finish(
                RPCError(
                    code: .unimplemented, message: "method '\(self.context.method)' is not served here"))
            return
        }
        if let refusal = self.server.admission?(self.context) {
            self.finish(refusal)
            return
        }
        switch method {
        case .inlineUnary, .unary, .unaryInlineFirst: self.state.withLock { $0.kind = .unary(method) }
        case .bidirectionalStream(let open):
            let handler = open(self.context, DataPlaneServerStream(call: self))
            self.state.withLock { $0.kind = .stream(handler) }
            self.server.streamOpened(self)
        }
    }

    func receive(_ bytes: UnsafeRawBufferPointer) {
        let (kind, requests) = self.state.withLock { state in
            state.requests += 1
            return (state.kind, state.requests)
        }
        switch kind {
        case .refused, .unary(.bidirectionalStream): return
        case .stream(let handler): handler.receive(bytes)
        case .unary(.inlineUnary(let body)):
            guard requests == 1 else { return self.refuseSecondRequest() }
            do {
                let answer = try body(bytes, self.context)
                answer.withUnsafeBufferPointer { mm_server_call_write_and_finish(self.call, $0.baseAddress, $0.count) }
            } catch {
                self.finish(RPCError(answering: error))
            }
        case .unary(.unary):
            guard requests == 1 else { return self.refuseSecondRequest() }
            self.state.withLock { $0.pendingRequest = Array(bytes) }
            self.server.enqueue(.call(self))
        case .unary(.unaryInlineFirst(let now, let later)):
            guard requests == 1 else { return self.refuseSecondRequest() }
            do {
                if let answer = try now(bytes, self.context) {
                    answer.withUnsafeBufferPointer {
                        mm_server_call_write_and_finish(self.call, $0.baseAddress, $0.count)
                    }
                    return
                }
            } catch {
                return self.finish(RPCError(answering: error))
            }
            self.state.withLock { state in
                state.kind = .unary(.unary(later))
                state.pendingRequest = Array(bytes)
            }
            self.server.enqueue(.call(self))
        }
    }

    func inputEnded() {
        let (kind, requests) = self.state.withLock { ($0.kind, $0.requests) }
        switch kind {
        case .refused: return
        case .stream(let handler): handler.inputEnded()
        case .unary:
            if requests == 0 {
                self.finish(
                    RPCError(
                        code: .invalidArgument,
                        message: "\(self.context.method) is a unary method: expected one request message, got none"))
            }
        }
    }

    func cancel() {
        let kind = self.state.withLock { state in
            state.cancelled = true
            state.runningTask?.task.cancel()
            for task in state.streamTasks.values { task.task.cancel() }
            return state.kind
        }
        if case .stream(let handler) = kind { handler.cancelled() }
    }

    /// The call is over (answered, cancelled, or finished by the server's shutdown): a task still working for it
    /// is cancelled, since nobody hears its answer.
    func ended() {
        let wasStream = self.state.withLock { state in
            state.cancelled = true
            state.runningTask?.task.cancel()
            for task in state.streamTasks.values { task.task.cancel() }
            // A stream's handler holds its writer, which holds this call: the cycle ends here.
            guard case .stream = state.kind else { return false }
            state.kind = .refused
            return true
        }
        if wasStream { self.server.streamEnded(self) }
    }

    /// Runs an async unary method in the server's task group.
    func runAsync() async {
        guard case .unary(.unary(let body)) = self.state.withLock({ $0.kind }),
            let request = self.state.withLock({ state -> [UInt8]? in
                defer { state.pendingRequest = nil }
                return state.pendingRequest
            })
        else { return }
        let alreadyCancelled = withUnsafeCurrentTask { task in
            let running = task.map(RunningTask.init)
            return self.state.withLock { state in
                state.runningTask = running
                return state.cancelled
            }
        }
        if alreadyCancelled { withUnsafeCurrentTask { $0?.cancel() } }
        do {
            let answer = try await body(request, self.context)
            self.state.withLock { $0.runningTask = nil }
            answer.withUnsafeBufferPointer { mm_server_call_write_and_finish(self.call, $0.baseAddress, $0.count) }
        } catch {
            self.state.withLock { $0.runningTask = nil }
            self.finish(RPCError(answering: error))
        }
    }

    /// The server begins to drain: a stream's handler hears it.
    func drain() {
        if case .stream(let handler) = self.state.withLock({ $0.kind }) { handler.draining() }
    }

    func startStreamWork(_ work: @escaping @Sendable () async -> Void) {
        self.server.enqueue(.work(self, work))
    }

    /// Runs a stream's work in the server's task group, cancelled with the call.
    func runStreamWork(_ work: @Sendable () async -> Void) async {
        let (id, alreadyCancelled) = withUnsafeCurrentTask { task in
            let running = task.map(RunningTask.init)
            return self.state.withLock { state in
                let id = state.nextStreamTask
                state.nextStreamTask += 1
                state.streamTasks[id] = running
                return (id, state.cancelled)
            }
        }
        if alreadyCancelled { withUnsafeCurrentTask { $0?.cancel() } }
        await work()
        _ = self.state.withLock { $0.streamTasks.removeValue(forKey: id) }
    }

    func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { mm_server_call_write(self.call, $0.baseAddress, $0.count) }
    }

    func finish(_ error: RPCError?) {
        guard let error else { return mm_server_call_finish(self.call, 0, nil, 0) }
        var message = error.message
        message.withUTF8 { text in
            text.withMemoryRebound(to: CChar.self) {
                mm_server_call_finish(self.call, error.code.wireCode, $0.baseAddress, $0.count)
            }
        }
    }

    private func refuseSecondRequest() {
        self.finish(
            RPCError(
                code: .invalidArgument,
                message: "\(self.context.method) is a unary method: expected one request message, got more"))
    }
}

/// The task running an async method. It is cancelled from other threads only under the call's lock, and forgotten
/// under that lock before the method returns, so it is never touched after the task ends.
struct RunningTask: @unchecked Sendable {
    let task: UnsafeCurrentTask
}

extension RPCError.Code {
    /// gRPC's number of this code.
    var wireCode: Int32 { Int32(self.rawValue) }
}

// MARK: - The core's callbacks

let serverOnCall:
    @convention(c) (
        UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<CChar>?, Int, UnsafePointer<mm_metadata_entry>?, Int,
        Int64, UnsafePointer<CChar>?, Int
    ) -> UnsafeMutableRawPointer? = {
        serverContext, call, method, methodLength, entries, entryCount, deadlineNanoseconds, peer, peerLength in
        let server = Unmanaged<DataPlaneServer>.fromOpaque(serverContext!).takeUnretainedValue()
        let context = DataPlaneCallContext(
            method: string(method, methodLength),
            metadata: Metadata(bridgeEntries: entries, count: entryCount),
            deadline: deadlineNanoseconds == Int64.max ? nil : .now + .nanoseconds(deadlineNanoseconds),
            peer: string(peer, peerLength))
        let serverCall = DataPlaneServerCall(call: call!, server: server, context: context)
        let retained = Unmanaged.passRetained(serverCall).toOpaque()
        serverCall.start()
        return retained
    }

let serverOnMessage: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<UInt8>?, Int) -> Void = {
    callContext, bytes, length in
    let call = Unmanaged<DataPlaneServerCall>.fromOpaque(callContext!).takeUnretainedValue()
    call.receive(UnsafeRawBufferPointer(start: bytes, count: length))
}

let serverOnHalfClose: @convention(c) (UnsafeMutableRawPointer?) -> Void = { callContext in
    Unmanaged<DataPlaneServerCall>.fromOpaque(callContext!).takeUnretainedValue().inputEnded()
}

let serverOnCancel: @convention(c) (UnsafeMutableRawPointer?) -> Void = { callContext in
    Unmanaged<DataPlaneServerCall>.fromOpaque(callContext!).takeUnretainedValue().cancel()
}

let serverOnDone: @convention(c) (UnsafeMutableRawPointer?) -> Void = { callContext in
    let call = Unmanaged<DataPlaneServerCall>.fromOpaque(callContext!).takeRetainedValue()
    call.ended()
}

/// A Swift string of `length` bytes at `pointer` (UTF-8, not NUL-terminated).
func string(_ pointer: UnsafePointer<CChar>?, _ length: Int) -> String {
    guard let pointer, length > 0 else { return "" }
    return pointer.withMemoryRebound(to: UInt8.self, capacity: length) {
        String(decoding: UnsafeBufferPointer(start: $0, count: length), as: UTF8.self)
    }
}

extension Metadata {
    /// Metadata from the core's entries: `-bin` keys as bytes, the others as text.
    init(bridgeEntries entries: UnsafePointer<mm_metadata_entry>?, count: Int) {
        self.init()
        guard let entries else { return }
        for entry in UnsafeBufferPointer(start: entries, count: count) {
            let key = string(entry.key, entry.key_length)
            if key.hasSuffix("-bin") {
                let bytes = entry.value.map {
                    $0.withMemoryRebound(to: UInt8.self, capacity: entry.value_length) {
                        Array(UnsafeBufferPointer(start: $0, count: entry.value_length))
                    }
                }
                self.addBinary(bytes ?? [], forKey: key)
            } else {
                self.addString(string(entry.value, entry.value_length), forKey: key)
            }
        }
    }
}
