import GRPCCore
import GRPCNIOTransportHTTP2
import MoECore
import MoEDataPlane
import MoEExpert
import MoEModel
import MoEInProcess
import MoEProto
import MoERouter
import MoERuntime
import MoEServing
import MoETestSupport
import MoEWire
import Synchronization
import Testing

/// An expert that takes every `Compute` call and never answers it (a hung process, a cut link), counting the calls it
/// holds; its other methods answer like the real service's. Served on a data-plane server, as experts are.
private final class HungExpert: Sendable {
    let real: ExpertService
    let held = Mutex(0)

    init(real: ExpertService) { self.real = real }

    var methods: [String: DataPlaneMethod] {
        var methods = self.real.dataPlaneMethods()
        methods["/moemesh.v1.Expert/Compute"] = .unary { _, _ in
            // Waits until the caller gives up on it (the call's cancellation ends the wait), never answering.
            await self.hold {
                let (never, keep) = AsyncStream<Never>.makeStream()
                defer { keep.finish() }
                for await _ in never {}
            }
            throw RPCError(code: .cancelled, message: "held until cancelled")
        }
        // Holds every streamed call until the router cancels it (or the stream ends), never answering.
        methods["/moemesh.v1.Expert/ComputeStream"] = .bidirectionalStream { _, stream in
            let cancellations = KeyedSignal<UInt64>(remembering: true)
            return DataPlaneCallStream<Moemesh_V1_ComputeStreamRequest, Moemesh_V1_ComputeStreamResponse>(
                stream: stream,
                refusal: Moemesh_V1_ComputeStreamResponse.refusing,
                start: { message in
                    guard !message.cancel else {
                        cancellations.signal(message.callID)
                        return .nothing
                    }
                    return .later {
                        await self.hold { await cancellations.wait(for: message.callID) }
                        return nil
                    }
                })
        }
        return methods
    }

    private func hold(_ wait: () async -> Void) async {
        self.held.withLock { $0 += 1 }
        defer { self.held.withLock { $0 -= 1 } }
        await wait()
    }
}

/// A router on a data-plane server on loopback in front of `experts` (each a data-plane server hosting every expert
/// of the model, in that order of replicas), reached as a router reaches its replicas (a `ComputeStream` each with
/// `streams`); `body` gets a gRPC client of the router and the experts' endpoints.
private func withRouter(
    model: SmallModel, experts: [[String: DataPlaneMethod]], scheduler: ReplicaScheduler = ReplicaScheduler(),
    batching: ForwardBatcher.Configuration? = nil, streams: Bool = true,
    _ body: (Moemesh_V1_Router.Client<HTTP2ClientTransport.Posix>, [ServiceEndpoint]) async throws -> Void
) async throws {
    let checkpoint = try MoECheckpoint(path: model.path)
    let addresses = checkpoint.layers.flatMap(\.expertAddresses)
    try await withDataPlaneServers(experts) { endpoints in
        try await withExpertReplicas(endpoints, streams: streams) { replicas in
            let topology = ExpertTopology(
                replicas: Dictionary(uniqueKeysWithValues: addresses.map { ($0, replicas) }),
                onRemoved: { scheduler.replicasLeft($0) })
            let executor = RemoteExpertExecutor(
                topology: topology, scheduler: scheduler, wireDType: .f32,
                metrics: ServiceMetrics())
            let router = RouterService(
                modelType: checkpoint.modelType, hiddenSize: checkpoint.hiddenSize,
                pipelines: try checkpoint.layers.map { try MoELayerPipeline(checkpoint: checkpoint, layer: $0) },
                executor: executor, batching: batching)
            try await withBatcher(router.batcher) {
                try await withDataPlaneServer(router.dataPlaneMethods()) { routerEndpoint in
                    try await withClient(of: routerEndpoint) { client in
                        try await body(Moemesh_V1_Router.Client(wrapping: client), endpoints)
                    }
                }
            }
        }
    }
}

private func request(_ hidden: Matrix, layer: String = "0", id: UInt64 = 0) -> Moemesh_V1_ForwardRequest {
    .with {
        $0.layer = layer
        $0.hiddenStates = Moemesh_V1_Tensor(hidden, dtype: .f32)
        $0.returnRouting = true
        $0.requestID = id
    }
}

@Suite("data plane: streams, deadlines, hedging and ejection", .timeLimit(.minutes(5)))
struct DataPlaneTests {
    @Test("ForwardStream carries many layers' requests, each answered with its id and equal to the unary answer")
    func forwardStream() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let expert = try ExpertService(checkpoint: checkpoint, experts: checkpoint.layers.flatMap(\.expertAddresses))
        try await withRouter(model: model, experts: [expert.dataPlaneMethods()], batching: .init()) { router, _ in
            let requests = (0..<24).map { index in
                request(
                    model.randomHidden(tokens: 1 + index % 4, seed: UInt64(index)), layer: index % 2 == 0 ? "0" : "1",
                    id: UInt64(100 + index))
            }
            // One bad request in the middle: its answer carries the error, and the stream goes on.
            var badRequest = request(model.randomHidden(tokens: 1), id: 999)
            badRequest.layer = "7"
            let bad = badRequest
            let answers = try await router.forwardStream(requestProducer: { writer in
                for message in requests.prefix(12) + [bad] + requests.dropFirst(12) { try await writer.write(message) }
            }) { response in
                var answers: [UInt64: Moemesh_V1_ForwardResponse] = [:]
                for try await answer in response.messages { answers[answer.requestID] = answer }
                return answers
            }
            #expect(answers.count == requests.count + 1)
            #expect(answers[999]?.error.code == Int32(RPCError.Code.notFound.rawValue))
            #expect(answers[999]?.error.message.hasPrefix("layer '7' is not an MoE layer") == true)
            for message in requests {
                let streamed = try #require(answers[message.requestID])
                #expect(!streamed.hasError)
                let unary = try await router.forward(message)
                #expect(streamed.routing.topkIds == unary.routing.topkIds)
                #expect(streamed.routing.topkWeights.map(\.bitPattern) == unary.routing.topkWeights.map(\.bitPattern))
                let a = streamed.output.data.withUnsafeBytes { DType.f32.decodeFloats($0) }
                let b = unary.output.data.withUnsafeBytes { DType.f32.decodeFloats($0) }
                #expect(relativeError(a, b) <= 1e-6, "request \(message.requestID)")
            }
        }
    }

    @Test(
        "a replica that never answers: no request lost, none waits for it (hedged, then ejected), hedges within budget",
        arguments: [true, false])
    func hungReplica(streams: Bool) async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let addresses = checkpoint.layers.flatMap(\.expertAddresses)
        let real = try ExpertService(checkpoint: checkpoint, experts: addresses)
        let hung = HungExpert(real: real)
        let reference = try InProcessMoE(checkpoint: checkpoint)
        // The hung replica is first in the topology; a short hedge delay (no latencies learnt yet: the ceiling).
        let scheduler = ReplicaScheduler(configuration: .init(hedgeCeiling: .milliseconds(20)))
        try await withRouter(
            model: model, experts: [hung.methods, real.dataPlaneMethods()], scheduler: scheduler, streams: streams
        ) {
            router, experts in
            let calls = 40
            try await withThrowingTaskGroup(of: Void.self) { group in
                for client in 0..<4 {
                    group.addTask {
                        for call in 0..<(calls / 4) {
                            let hidden = model.randomHidden(tokens: 2, seed: UInt64(client * 100 + call))
                            // The expert calls carry what is left of this deadline: a call left at the hung replica
                            // (hedged, ejected) ends there within 10 s at worst, whatever the transport does.
                            let answer = try await router.forward(request(hidden), options: .timeout(.seconds(10)))
                            let expected = try await reference.forward(layer: "0", hidden: hidden)
                            let output = answer.output.data.withUnsafeBytes { DType.f32.decodeFloats($0) }
                            #expect(relativeError(output, expected.output.values) <= 1e-6)
                            #expect(answer.routing.topkIds == expected.routing.topkIDs)
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(scheduler.outstanding(experts[0]) == 0 && scheduler.outstanding(experts[1]) == 0)
            // Every answer came while the hung replica still held calls or had them cancelled: none waited for it.
            // The hung replica was ejected (whether its ejection still lasts depends on how long the calls took).
            #expect(scheduler.takeEjections().contains { $0.endpoint == experts[0] })
            // Hedges within budget: 10 saved up at start, plus 0.1 per call.
            let (expertCalls, hedges) = scheduler.statistics
            #expect(
                hedges >= 1 && Double(hedges) <= 10 + 0.1 * Double(expertCalls),
                "\(hedges) hedges for \(expertCalls) calls")
        }
        // Once the servers are gone, nothing is held at the hung replica: its calls ended by cancellation or deadline.
        #expect(hung.held.withLock { $0 } == 0)
    }

    /// An expert service hosting every expert of `model`, each call of which takes an hour (until cancelled).
    static func hourLongExpert(_ model: SmallModel) throws -> ExpertService {
        let checkpoint = try MoECheckpoint(path: model.path)
        return try ExpertService(
            checkpoint: checkpoint, experts: checkpoint.layers.flatMap(\.expertAddresses), computeDelay: .seconds(3600))
    }

    @Test("a streamed expert call past its deadline fails DEADLINE_EXCEEDED and is cancelled at the expert")
    func streamedCallDeadline() async throws {
        let written = Mutex<[Moemesh_V1_ComputeStreamRequest]>([])
        // An expert that never answers.
        let channel = ComputeStreamChannel { _, _ in
            ComputeStreamChannel.Outbound(write: { message in written.withLock { $0.append(message) } }, close: {})
        }
        let error = await #expect(throws: RPCError.self) {
            _ = try await channel.compute(
                Moemesh_V1_ComputeRequest(), metadata: [:], deadline: .now + .milliseconds(50))
        }
        #expect(error?.code == .deadlineExceeded)
        let messages = written.withLock { $0 }
        #expect(messages.count == 2)
        #expect(messages.last?.cancel == true && messages.last?.callID == messages.first?.callID)
    }

    @Test("a deadline crosses a stream message as timeout_ms: milliseconds left rounded up, never 0 (which says none)")
    func deadlineOnTheWire() {
        let now = ContinuousClock.now
        // An hour ahead: 3,600,000 ms, less what passes before it is read (a 1,000 s margin).
        let hour = RequestDeadline.wireMilliseconds(until: now + .seconds(3600))
        #expect((2_600_000...3_600_000).contains(hour))
        #expect(RequestDeadline.wireMilliseconds(until: now - .seconds(1)) == 1)  // passed: 1 ms, not "none"
        #expect(RequestDeadline.wireMilliseconds(until: now + .seconds(86_400 * 365)) == UInt32.max)
        #expect(RequestDeadline.after(milliseconds: 0) == nil)
        let read = RequestDeadline.after(milliseconds: 1_000)
        #expect(read.map { $0 > now + .milliseconds(999) } == true)
    }

    @Test("a client that cancels: its expert calls are cancelled at the expert")
    func cancellationReachesTheExpert() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let expert = try Self.hourLongExpert(model)
        try await withRouter(model: model, experts: [expert.dataPlaneMethods()]) { router, _ in
            let call = Task { try await router.forward(request(model.randomHidden(tokens: 3))) }
            try #require(await expert.meter.changes.wait { expert.meter.inFlightRows > 0 })
            call.cancel()
            _ = try? await call.value
            #expect(await expert.meter.changes.wait { expert.meter.inFlightRows == 0 })
            #expect(expert.meter.cancelledCalls >= 1)
        }
    }

    @Test(
        "a deadline shorter than the expert's work: DEADLINE_EXCEEDED at the deadline, and the expert left with nothing"
    )
    func deadlineShorterThanTheWork() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let expert = try Self.hourLongExpert(model)
        try await withRouter(model: model, experts: [expert.dataPlaneMethods()]) { router, _ in
            do {
                _ = try await router.forward(request(model.randomHidden(tokens: 3)), options: .timeout(.seconds(2)))
                Issue.record("answered although the expert takes an hour")
            } catch let error as RPCError {
                // Had the router kept a fixed 30 s expert deadline, the call would have hung for the expert's hour.
                #expect(error.code == .deadlineExceeded)
            }
            // The call reached the expert or was cancelled before it did: either way nothing runs there any more.
            #expect(await expert.meter.changes.wait { expert.meter.inFlightRows == 0 })
        }
    }
}

extension CallOptions {
    static func timeout(_ duration: Duration) -> CallOptions {
        var options = CallOptions.defaults
        options.timeout = duration
        return options
    }
}
