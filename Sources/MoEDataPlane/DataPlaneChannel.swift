import CGRPCBridge
import GRPCCore
import MoECore
import Synchronization

/// A channel to one server on the C++ core: a connection made on the first call and kept (reconnected with
/// bounded backoff), over which unary and streaming calls run with bytes in and bytes out.
public final class DataPlaneChannel: Sendable {
    public struct Configuration: Sendable {
        public var maxReceiveMessageBytes: Int = 4 << 20
        public var maxSendMessageBytes: Int = 4 << 20
        public var keepaliveTime: Duration = .seconds(10)
        public var keepaliveTimeout: Duration = .seconds(5)
        /// Reconnection after a failed attempt waits this long first, doubling up to `maxReconnectBackoff`.
        public var initialReconnectBackoff: Duration = .milliseconds(100)
        public var maxReconnectBackoff: Duration = .seconds(2)
        public var tls: DataPlaneTLS?

        public init(tls: DataPlaneTLS? = nil) { self.tls = tls }
    }

    /// `host:port` or `unix:/path`.
    public let target: String
    /// The core's channel; its functions may be called from any thread.
    private nonisolated(unsafe) let handle: OpaquePointer

    public init(target: String, configuration: Configuration = Configuration()) throws {
        self.target = target
        var error = [CChar](repeating: 0, count: 512)
        let channel = target.withCString { target in
            withOptionalTLS(configuration.tls) { tls in
                var options = mm_channel_options()
                options.target = target
                options.max_receive_message_bytes = Int32(clamping: configuration.maxReceiveMessageBytes)
                options.max_send_message_bytes = Int32(clamping: configuration.maxSendMessageBytes)
                options.keepalive_time_ms = Int32(clamping: Int64(configuration.keepaliveTime.milliseconds))
                options.keepalive_timeout_ms = Int32(clamping: Int64(configuration.keepaliveTimeout.milliseconds))
                options.initial_reconnect_backoff_ms = Int32(
                    clamping: Int64(configuration.initialReconnectBackoff.milliseconds))
                options.max_reconnect_backoff_ms = Int32(
                    clamping: Int64(configuration.maxReconnectBackoff.milliseconds))
                options.tls = tls
                return mm_channel_create(&options, &error, error.count)
            }
        }
        guard let channel else {
            throw DataPlaneSetupError(error.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
        self.handle = channel
    }

    deinit { mm_channel_release(self.handle) }

    /// Calls a unary `method` (`/package.Service/Method`): sends `request`, returns the answer. Cancelling the
    /// calling task cancels the call at the server; `deadline` travels with the call (`grpc-timeout`).
    public func unary(
        _ method: String, request: [UInt8], metadata: Metadata = [:], deadline: ContinuousClock.Instant? = nil,
        waitForReady: Bool = true
    ) async throws -> [UInt8] {
        let call = CallHandle()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[UInt8], any Error>) in
                let callbacks = Unmanaged.passRetained(UnaryCallbacks(continuation)).toOpaque()
                let pointer = self.start(
                    method, metadata: metadata, deadline: deadline, waitForReady: waitForReady, streaming: false,
                    request: request,
                    callbacks: mm_client_callbacks(
                        context: callbacks, on_message: unaryOnMessage, on_done: unaryOnDone))
                call.set(pointer)
            }
        } onCancel: {
            call.cancel()
        }
    }

    /// Opens a bidirectional stream of `method`: each answer is handed to `onMessage` (on a core thread, in
    /// order), then its end to `onEnd` (nil: OK). Write through the stream; close or cancel it.
    public func openStream(
        _ method: String, metadata: Metadata = [:], deadline: ContinuousClock.Instant? = nil,
        waitForReady: Bool = true, onMessage: @escaping @Sendable (UnsafeRawBufferPointer) -> Void,
        onEnd: @escaping @Sendable (RPCError?) -> Void
    ) -> DataPlaneClientStream {
        let callbacks = Unmanaged.passRetained(StreamCallbacks(onMessage: onMessage, onEnd: onEnd)).toOpaque()
        let pointer = self.start(
            method, metadata: metadata, deadline: deadline, waitForReady: waitForReady, streaming: true, request: [],
            callbacks: mm_client_callbacks(context: callbacks, on_message: streamOnMessage, on_done: streamOnDone))
        return DataPlaneClientStream(handle: pointer)
    }

    private func start(
        _ method: String, metadata: Metadata, deadline: ContinuousClock.Instant?, waitForReady: Bool, streaming: Bool,
        request: [UInt8], callbacks: mm_client_callbacks
    ) -> OpaquePointer {
        var nanoseconds: Int64 = 0
        if let deadline {
            let (seconds, attoseconds) = (deadline - .now).components
            nanoseconds = max(1, seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
        }
        return method.withCString { method in
            metadata.withBridgeEntries { entries, count in
                request.withUnsafeBufferPointer { bytes in
                    mm_client_call_start(
                        self.handle, method, entries, count, nanoseconds, waitForReady ? 1 : 0, streaming ? 1 : 0,
                        bytes.baseAddress, bytes.count, callbacks)!
                }
            }
        }
    }
}

/// The calling side of a streamed call. Dropping it cancels a call still running.
public final class DataPlaneClientStream: Sendable {
    /// The core's channel; its functions may be called from any thread.
    private nonisolated(unsafe) let handle: OpaquePointer

    init(handle: OpaquePointer) { self.handle = handle }
    deinit { mm_client_call_release(self.handle) }

    /// Sends a message (copied; messages go in the order written).
    public func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { mm_client_call_write(self.handle, $0.baseAddress, $0.count) }
    }

    /// Tells the server nothing more comes, once what was written is sent.
    public func closeSend() { mm_client_call_close_send(self.handle) }

    /// Cancels the call (the server sees it; `onEnd` hears CANCELLED).
    public func cancel() { mm_client_call_cancel(self.handle) }
}

/// A unary call's core handle for cancellation: set once started, given back when the awaiting function returns.
private final class CallHandle: Sendable {
    private let state = Mutex<(call: CorePointer?, cancelled: Bool)>((nil, false))

    func set(_ pointer: OpaquePointer) {
        let cancelled = self.state.withLock { state in
            state.call = CorePointer(pointer: pointer)
            return state.cancelled
        }
        if cancelled { mm_client_call_cancel(pointer) }
    }

    func cancel() {
        let call = self.state.withLock { state in
            state.cancelled = true
            return state.call
        }
        if let call { mm_client_call_cancel(call.pointer) }
    }

    deinit {
        if let call = self.state.withLock({ $0.call }) { mm_client_call_release(call.pointer) }
    }
}

private final class UnaryCallbacks {
    let continuation: CheckedContinuation<[UInt8], any Error>
    var response: [UInt8] = []
    init(_ continuation: CheckedContinuation<[UInt8], any Error>) { self.continuation = continuation }
}

private final class StreamCallbacks {
    let onMessage: @Sendable (UnsafeRawBufferPointer) -> Void
    let onEnd: @Sendable (RPCError?) -> Void
    init(
        onMessage: @escaping @Sendable (UnsafeRawBufferPointer) -> Void, onEnd: @escaping @Sendable (RPCError?) -> Void
    ) {
        self.onMessage = onMessage
        self.onEnd = onEnd
    }
}

private let unaryOnMessage: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<UInt8>?, Int) -> Void = {
    context, bytes, length in
    let callbacks = Unmanaged<UnaryCallbacks>.fromOpaque(context!).takeUnretainedValue()
    callbacks.response = Array(UnsafeBufferPointer(start: bytes, count: length))
}

private let unaryOnDone: @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafePointer<CChar>?, Int) -> Void = {
    context, code, message, length in
    let callbacks = Unmanaged<UnaryCallbacks>.fromOpaque(context!).takeRetainedValue()
    if code == 0 {
        callbacks.continuation.resume(returning: callbacks.response)
    } else {
        callbacks.continuation.resume(throwing: RPCError(wireCode: code, message: string(message, length)))
    }
}

private let streamOnMessage: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<UInt8>?, Int) -> Void = {
    context, bytes, length in
    let callbacks = Unmanaged<StreamCallbacks>.fromOpaque(context!).takeUnretainedValue()
    callbacks.onMessage(UnsafeRawBufferPointer(start: bytes, count: length))
}

private let streamOnDone: @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafePointer<CChar>?, Int) -> Void = {
    context, code, message, length in
    let callbacks = Unmanaged<StreamCallbacks>.fromOpaque(context!).takeRetainedValue()
    callbacks.onEnd(code == 0 ? nil : RPCError(wireCode: code, message: string(message, length)))
}

extension Metadata {
    /// `body` with these entries as the core takes them (valid during `body`).
    func withBridgeEntries<Result>(_ body: (UnsafePointer<mm_metadata_entry>?, Int) -> Result) -> Result {
        guard !self.isEmpty else { return body(nil, 0) }
        var storage: [UInt8] = []
        var ranges: [(key: Range<Int>, value: Range<Int>)] = []
        for (key, value) in self {
            let keyStart = storage.count
            storage.append(contentsOf: key.utf8)
            let valueStart = storage.count
            switch value {
            case .string(let text): storage.append(contentsOf: text.utf8)
            case .binary(let bytes): storage.append(contentsOf: bytes)
            }
            ranges.append((keyStart..<valueStart, valueStart..<storage.count))
        }
        return storage.withUnsafeBufferPointer { buffer in
            let base = UnsafeRawPointer(buffer.baseAddress!).assumingMemoryBound(to: CChar.self)
            let entries = ranges.map {
                mm_metadata_entry(
                    key: base + $0.key.lowerBound, key_length: $0.key.count, value: base + $0.value.lowerBound,
                    value_length: $0.value.count)
            }
            return entries.withUnsafeBufferPointer { body($0.baseAddress, $0.count) }
        }
    }
}
