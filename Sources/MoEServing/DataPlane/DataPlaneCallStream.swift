import GRPCCore
import MoEDataPlane
import SwiftProtobuf
import Synchronization

/// A bidirectional stream whose messages are independent calls (`ForwardStream`, `ComputeStream`): each message is
/// handed to `start`, whose work runs at once on the transport's thread or as a task of the server's, concurrently
/// with the others; each answer is written as soon as its work returns it. The stream ends OK once the client
/// closes it and every answer is written. While the server drains, `drain` decides: `.refuse` answers the calls
/// that come with `refusal` (UNAVAILABLE, so that the caller retries elsewhere) and ends the stream UNAVAILABLE
/// once those in flight are answered; `.serveUntilIdle(idle)` goes on answering until no call has come for `idle`
/// (the caller has moved elsewhere), then ends it so, within the server's drain timeout.
public final class DataPlaneCallStream<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>:
    DataPlaneStreamHandler, Sendable
{
    private struct State {
        var inFlight = 0
        var inputEnded = false
        var draining = false
        var finished = false
        var lastCall = ContinuousClock.now
    }

    /// What a stream does with the calls that come while its server drains.
    public enum DrainPolicy: Sendable {
        /// Refuse them: the caller can go elsewhere at once (a router's clients, which reconnect to another router).
        case refuse
        /// Answer them until none has come for this long: the caller may have nowhere else to go yet (a router
        /// whose every replica of an expert is draining at once, as when the coordinator that started them died),
        /// and stops on its own once it has.
        case serveUntilIdle(Duration)
    }

    /// What a message starts.
    public enum Work: Sendable {
        /// Nothing to answer (a cancellation).
        case nothing
        /// Synchronous work that can start at once, answered on the transport's thread before the next message is
        /// read (an expert's FFN on a free device: no task, no hop).
        case now(@Sendable () -> Response)
        /// Work for a task of the server's; nil: no answer.
        case later(@Sendable () async -> Response?)
    }

    private let stream: DataPlaneServerStream
    private let start: @Sendable (Request) -> Work
    private let refusal: @Sendable (Request, RPCError) -> Response
    private let state = Mutex(State())
    private let drain: DrainPolicy

    public init(
        stream: DataPlaneServerStream, drain: DrainPolicy = .refuse,
        refusal: @escaping @Sendable (Request, RPCError) -> Response, start: @escaping @Sendable (Request) -> Work
    ) {
        self.stream = stream
        self.drain = drain
        self.refusal = refusal
        self.start = start
    }

    static var shuttingDown: RPCError { RPCError(code: .unavailable, message: "the service is shutting down") }

    public func receive(_ bytes: UnsafeRawBufferPointer) {
        let message: Request
        do {
            message = try DataPlaneCalls.decode(Request.self, Array(bytes))
        } catch {
            return self.stream.finish(error)
        }
        let work = self.start(message)
        if case .nothing = work { return }
        let refused = self.state.withLock { state in
            state.lastCall = .now
            let refused = state.draining && self.refusesWhileDraining
            if !refused { state.inFlight += 1 }
            return refused
        }
        if refused { return self.write(self.refusal(message, Self.shuttingDown)) }
        switch work {
        case .nothing: return
        case .now(let answer):
            self.write(answer())
            self.settle { $0.inFlight -= 1 }
        case .later(let answer):
            self.stream.run {
                if let answer = await answer() { self.write(answer) }
                self.settle { $0.inFlight -= 1 }
            }
        }
    }

    public func inputEnded() { self.settle { $0.inputEnded = true } }

    public func draining() {
        self.settle { $0.draining = true }
        guard case .serveUntilIdle(let idle) = self.drain else { return }
        self.stream.run {
            while true {
                try? await Task.sleep(for: idle / 4)
                if Task.isCancelled { return }  // the call was cancelled: nothing left to end
                // nil: keep watching; false: the stream ended otherwise; true: idle, end it here.
                let end: Bool? = self.state.withLock { state in
                    if state.finished { return false }
                    guard state.inFlight == 0, ContinuousClock.now - state.lastCall >= idle else { return nil }
                    state.finished = true
                    return true
                }
                guard let end else { continue }
                if end { self.stream.finish(Self.shuttingDown) }
                return
            }
        }
    }

    private var refusesWhileDraining: Bool {
        if case .refuse = self.drain { return true }
        return false
    }

    public func cancelled() {}

    private func write(_ answer: Response) {
        if let bytes: [UInt8] = try? answer.serializedBytes() { self.stream.write(bytes) }
    }

    /// Applies `change`, then ends the stream when nothing is left to answer.
    private func settle(_ change: (inout State) -> Void) {
        let end: RPCError?? = self.state.withLock { state in
            change(&state)
            guard !state.finished, state.inFlight == 0,
                state.inputEnded || (state.draining && self.refusesWhileDraining)
            else { return nil }
            state.finished = true
            return .some(state.inputEnded ? nil : Self.shuttingDown)
        }
        if let end { self.stream.finish(end) }
    }
}
