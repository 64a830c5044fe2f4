import GRPCCore
import MoEDataPlane
import MoEProto
import MoEServing
import MoEWire
import Synchronization

/// One long-lived `ComputeStream` to an expert service: the router's calls to it multiplexed by id and answered as
/// each finishes, so one slow call does not hold up those behind it, and a call costs a message each way rather than
/// a new HTTP/2 stream. Opened on first use and again after it ends; calls in flight when it ends fail with
/// `UNAVAILABLE` (retried on another replica like any unreachable call). A call whose caller is cancelled is
/// cancelled at the expert by a message naming it.
public final class ComputeStreamChannel: Sendable {
    /// One open stream's sending side.
    public struct Outbound: Sendable {
        /// Sends a message (in the order written; from any task).
        public let write: @Sendable (Moemesh_V1_ComputeStreamRequest) -> Void
        /// Ends the stream from this side.
        public let close: @Sendable () -> Void

        public init(
            write: @escaping @Sendable (Moemesh_V1_ComputeStreamRequest) -> Void, close: @escaping @Sendable () -> Void
        ) {
            self.write = write
            self.close = close
        }
    }

    /// Opens one stream: each answer goes to `deliver`, its end to `ended` (nil: closed as asked).
    public typealias Opener =
        @Sendable (
            _ deliver: @escaping @Sendable (Moemesh_V1_ComputeStreamResponse) -> Void,
            _ ended: @escaping @Sendable ((any Error)?) -> Void
        ) -> Outbound

    private struct State {
        /// The stream calls go on, with its number.
        var current: (stream: UInt64, outbound: Outbound)?
        var nextStream: UInt64 = 0
        /// The last stream that ended (an open that ended before it was set must not be set).
        var lastEnded: UInt64?
        var pending: [UInt64: Pending] = [:]
        var nextID: UInt64 = 0
    }

    /// A call waiting for its answer: the stream it went on, its caller, its deadline's timer.
    private struct Pending {
        let stream: UInt64
        let continuation: CheckedContinuation<Moemesh_V1_ComputeResponse, any Error>
        var timer: UInt64?
    }

    private let state = Mutex(State())
    private let opener: Opener
    /// The calls' deadlines, on one timer.
    private let deadlines = DeadlineTimer()

    public init(opener: @escaping Opener) { self.opener = opener }

    /// A stream over a data-plane channel (gRPC's C++ core): messages are written as they are sent, answers
    /// decoded on the core's thread, nothing in between. It fails at once while the connection is down.
    public convenience init(channel: DataPlaneChannel, metadata: Metadata) {
        self.init { deliver, ended in
            let stream = channel.openStream(
                "/moemesh.v1.Expert/ComputeStream", metadata: metadata, waitForReady: false,
                onMessage: { bytes in
                    do {
                        deliver(try Moemesh_V1_ComputeStreamResponse(serializedBytes: Array(bytes)))
                    } catch {
                        ended(
                            RPCError(
                                code: .internalError,
                                message: "the expert answered a message that is not a ComputeStreamResponse: \(error)"))
                    }
                },
                onEnd: { ended($0) })
            return Outbound(
                write: { message in
                    if let bytes: [UInt8] = try? message.serializedBytes() { stream.write(bytes) }
                },
                close: { stream.closeSend() })
        }
    }

    /// One call: `request` answered by `deadline` (the expert enforces it too; here the channel's timer fails the
    /// call and cancels it at the expert when it passes), carrying `metadata` (trace context).
    public func compute(
        _ request: Moemesh_V1_ComputeRequest, metadata: Metadata, deadline: ContinuousClock.Instant
    ) async throws -> Moemesh_V1_ComputeResponse {
        var message = Moemesh_V1_ComputeStreamRequest()
        message.compute = request
        message.timeoutMs = RequestDeadline.wireMilliseconds(until: deadline)
        for (key, value) in metadata { if case .string(let text) = value { message.metadata[key] = text } }
        guard let (id, stream, outbound) = self.open() else { throw Self.streamEnded }
        message.callID = id
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let accepted = self.state.withLock { state -> Bool in
                    guard !Task.isCancelled, state.current?.stream == stream else { return false }
                    state.pending[id] = Pending(stream: stream, continuation: continuation)
                    return true
                }
                guard accepted else {
                    continuation.resume(throwing: Task.isCancelled ? CancellationError() : Self.streamEnded)
                    return
                }
                let timer = self.deadlines.schedule(at: deadline) {
                    self.abandon(id, outbound: outbound, with: Self.deadlinePassed)
                }
                let answered = self.state.withLock { state in
                    guard state.pending[id] != nil else { return true }
                    state.pending[id]?.timer = timer
                    return false
                }
                if answered { self.deadlines.cancel(timer) }
                outbound.write(message)
            }
        } onCancel: {
            self.abandon(id, outbound: outbound, with: CancellationError())
        }
    }

    /// Fails a call still waiting (its caller cancelled, its deadline passed) and cancels it at the expert.
    private func abandon(_ id: UInt64, outbound: Outbound, with error: any Error) {
        guard let pending = self.state.withLock({ $0.pending.removeValue(forKey: id) }) else { return }
        if let timer = pending.timer { self.deadlines.cancel(timer) }
        outbound.write(
            .with {
                $0.callID = id
                $0.cancel = true
            })
        pending.continuation.resume(throwing: error)
    }

    /// A new call id on the open stream, opening one if none is; nil when the stream opened ended at once. (The
    /// opener runs outside the lock: a stream may end on the calling thread, and its end takes the lock.)
    private func open() -> (id: UInt64, stream: UInt64, outbound: Outbound)? {
        let (id, existing, number) = self.state.withLock { state in
            state.nextID &+= 1
            if let current = state.current { return (state.nextID, Optional(current), UInt64(0)) }
            state.nextStream += 1
            return (state.nextID, nil, state.nextStream)
        }
        if let existing { return (id, existing.stream, existing.outbound) }
        let outbound = self.opener({ self.deliver($0) }) { error in
            self.end(
                stream: number,
                failure: error.map { RPCError(code: .unavailable, message: "the compute stream failed: \($0)") }
                    ?? Self.streamEnded)
        }
        // Two callers may have opened at once: the stream set first stays, the other is closed.
        let (kept, surplus) = self.state.withLock { state -> ((UInt64, Outbound)?, Outbound?) in
            if let current = state.current { return ((current.stream, current.outbound), outbound) }
            if state.lastEnded.map({ $0 >= number }) ?? false { return (nil, outbound) }
            state.current = (number, outbound)
            return ((number, outbound), nil)
        }
        surplus?.close()
        return kept.map { (id, $0.0, $0.1) }
    }

    private func deliver(_ message: Moemesh_V1_ComputeStreamResponse) {
        guard let pending = self.state.withLock({ $0.pending.removeValue(forKey: message.callID) }) else {
            return  // cancelled meanwhile
        }
        if let timer = pending.timer { self.deadlines.cancel(timer) }
        if message.hasError {
            pending.continuation.resume(throwing: message.error.rpcError)
        } else {
            pending.continuation.resume(returning: message.compute)
        }
    }

    /// Stream `stream` ended: its calls fail, and the next call opens a new stream.
    private func end(stream: UInt64, failure: any Error) {
        let (failed, outbound) = self.state.withLock { state in
            state.lastEnded = max(state.lastEnded ?? 0, stream)
            var outbound: Outbound?
            if state.current?.stream == stream {
                outbound = state.current?.outbound
                state.current = nil
            }
            let failed = state.pending.values.filter { $0.stream == stream }
            state.pending = state.pending.filter { $0.value.stream != stream }
            return (failed, outbound)
        }
        outbound?.close()
        for pending in failed {
            if let timer = pending.timer { self.deadlines.cancel(timer) }
            pending.continuation.resume(throwing: failure)
        }
    }

    /// Ends the stream (its calls fail with `UNAVAILABLE`).
    public func close() {
        guard let stream = self.state.withLock({ $0.current?.stream }) else { return }
        self.end(
            stream: stream, failure: RPCError(code: .unavailable, message: "the connection to the expert was closed"))
    }

    static let streamEnded = RPCError(code: .unavailable, message: "the compute stream to the expert ended")
    static let deadlinePassed = RPCError(
        code: .deadlineExceeded, message: "the request's deadline passed before it was answered")
}
