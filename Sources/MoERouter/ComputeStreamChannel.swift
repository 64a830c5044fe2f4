import GRPCCore
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
    /// Runs one stream until it ends: `requests` go out, each answer goes to `deliver`.
    public typealias Runner =
        @Sendable (
            _ requests: AsyncStream<Moemesh_V1_ComputeStreamRequest>,
            _ deliver: @escaping @Sendable (Moemesh_V1_ComputeStreamResponse) -> Void
        ) async throws -> Void

    private struct State {
        var outbound: AsyncStream<Moemesh_V1_ComputeStreamRequest>.Continuation?
        var generation: UInt64 = 0
        var pending:
            [UInt64: (generation: UInt64, continuation: CheckedContinuation<Moemesh_V1_ComputeResponse, any Error>)] =
                [:]
        var nextID: UInt64 = 0
    }

    private let state = Mutex(State())
    private let runner: Runner
    private let spawn: @Sendable (@escaping @Sendable () async -> Void) -> Void

    /// `spawn` runs a stream's task where its owner wants it (`ExpertConnections` runs it with the connection).
    public init(runner: @escaping Runner, spawn: @escaping @Sendable (@escaping @Sendable () async -> Void) -> Void) {
        self.runner = runner
        self.spawn = spawn
    }

    /// A stream over `client`'s `ComputeStream`. It fails at once, rather than waiting, while the connection is down.
    public convenience init<Transport: ClientTransport>(
        client: Moemesh_V1_Expert.Client<Transport>, serving: ServingConfiguration,
        spawn: @escaping @Sendable (@escaping @Sendable () async -> Void) -> Void
    ) {
        var streamOptions = serving.callOptions()
        streamOptions.waitForReady = false
        let options = streamOptions
        self.init(
            runner: { requests, deliver in
                try await client.computeStream(
                    options: options,
                    requestProducer: { writer in
                        for await request in requests { try await writer.write(request) }
                    },
                    onResponse: { response in
                        for try await message in response.messages { deliver(message) }
                    })
            }, spawn: spawn)
    }

    /// One call: `request` within `timeout` (the expert enforces it too), carrying `metadata` (trace context).
    public func compute(
        _ request: Moemesh_V1_ComputeRequest, metadata: Metadata, timeout: Duration
    ) async throws -> Moemesh_V1_ComputeResponse {
        try await RequestDeadline.enforce(.now + timeout) {
            try await self.send(request, metadata: metadata, timeout: timeout)
        }
    }

    private func send(
        _ request: Moemesh_V1_ComputeRequest, metadata: Metadata, timeout: Duration
    ) async throws -> Moemesh_V1_ComputeResponse {
        var message = Moemesh_V1_ComputeStreamRequest()
        message.compute = request
        message.timeoutMs = UInt32(clamping: Int64(timeout.milliseconds.rounded(.up)))
        for (key, value) in metadata { if case .string(let text) = value { message.metadata[key] = text } }
        let (id, generation, outbound) = self.open()
        message.callID = id
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let accepted = self.state.withLock { state -> Bool in
                    guard !Task.isCancelled, state.generation == generation else { return false }
                    state.pending[id] = (generation, continuation)
                    return true
                }
                guard accepted else {
                    continuation.resume(throwing: Task.isCancelled ? CancellationError() : Self.streamEnded)
                    return
                }
                outbound.yield(message)
            }
        } onCancel: {
            let continuation = self.state.withLock { $0.pending.removeValue(forKey: id)?.continuation }
            guard let continuation else { return }
            outbound.yield(
                .with {
                    $0.callID = id
                    $0.cancel = true
                })
            continuation.resume(throwing: CancellationError())
        }
    }

    /// A new call id on the open stream, opening one if none is.
    private func open() -> (UInt64, UInt64, AsyncStream<Moemesh_V1_ComputeStreamRequest>.Continuation) {
        let (id, generation, outbound, requests) = self.state.withLock { state in
            state.nextID &+= 1
            if let outbound = state.outbound {
                return (state.nextID, state.generation, outbound, nil as AsyncStream<Moemesh_V1_ComputeStreamRequest>?)
            }
            let (requests, outbound) = AsyncStream<Moemesh_V1_ComputeStreamRequest>.makeStream()
            state.outbound = outbound
            return (state.nextID, state.generation, outbound, requests)
        }
        if let requests {
            self.spawn {
                var failure: any Error = Self.streamEnded
                do {
                    try await self.runner(requests) { self.deliver($0) }
                } catch {
                    failure = RPCError(code: .unavailable, message: "the compute stream failed: \(error)")
                }
                self.end(generation: generation, failure: failure)
            }
        }
        return (id, generation, outbound)
    }

    private func deliver(_ message: Moemesh_V1_ComputeStreamResponse) {
        guard let continuation = self.state.withLock({ $0.pending.removeValue(forKey: message.callID)?.continuation })
        else {
            return  // cancelled meanwhile
        }
        if message.hasError {
            continuation.resume(throwing: message.error.rpcError)
        } else {
            continuation.resume(returning: message.compute)
        }
    }

    /// The stream of `generation` ended: its calls fail, and the next call opens a new stream.
    private func end(generation: UInt64, failure: any Error) {
        let failed = self.state.withLock { state -> [CheckedContinuation<Moemesh_V1_ComputeResponse, any Error>] in
            guard state.generation == generation else { return [] }
            state.generation += 1
            state.outbound?.finish()
            state.outbound = nil
            let failed = state.pending.values.filter { $0.generation == generation }.map(\.continuation)
            state.pending = state.pending.filter { $0.value.generation != generation }
            return failed
        }
        for continuation in failed { continuation.resume(throwing: failure) }
    }

    /// Ends the stream (its calls fail with `UNAVAILABLE`).
    public func close() {
        let generation = self.state.withLock { $0.generation }
        self.end(
            generation: generation,
            failure: RPCError(code: .unavailable, message: "the connection to the expert was closed"))
    }

    static let streamEnded = RPCError(code: .unavailable, message: "the compute stream to the expert ended")
}
