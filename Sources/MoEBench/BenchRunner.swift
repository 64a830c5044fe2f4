import CGRPCBridge
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import MoECore
import MoEDataPlane
import MoEKernels
import MoEInProcess
import MoELocalMesh
import MoEModel
import MoEProcesses
import MoEProto
import MoECoordinator
import MoERuntime
import MoEServing
import MoEWire
import ServiceLifecycle
import Synchronization

/// What `moemesh bench` measures, and how long.
public struct BenchConfiguration: Sendable {
    public var shape = ModelSynthesizer.Shape(experts: 8, topK: 2, hiddenSize: 1024, intermediateSize: 2816, layers: 1)
    public var tokens: [Int] = [1, 8, 256, 2048]
    public var clients: [Int] = [1, 4, 16]
    /// Time spent measuring each shape (each side).
    public var secondsPerShape: Double = 3
    public var wireDType: DType = .f32
    /// Router to experts over Unix domain sockets (else TCP loopback).
    public var unixSockets = true
    public var cacheDirectory: String
    /// The `moemesh` binary that runs the mesh's processes.
    public var executable: String
    /// OpenBLAS threads per expert process.
    public var expertThreads: Int
    /// Extra arguments for the (batching) router, e.g. `--batch-delay-us 4000`.
    public var routerArguments: [String] = []
    /// How long one replica is hung (SIGSTOP) in the fault phase (a mesh with 2 replicas per expert); 0: no fault phase.
    public var hungReplica: Duration = .seconds(8)
    /// How the experts' weights are stored, in the mesh and in the in-process reference.
    public var precision: WeightPrecision = .f32
    /// A fine-grained layer measured at decode on a mesh of `manyExpertsPerProcess` experts per process (default:
    /// 64 experts, top-8, I ÷ 4: the same FLOPs per token as the default top-2 layer, on 8 replicas); nil: skipped.
    public var manyExperts: ModelSynthesizer.Shape? = ModelSynthesizer.Shape(
        experts: 64, topK: 8, hiddenSize: 1024, intermediateSize: 704, layers: 1)
    public var manyExpertsPerProcess = 8

    public init(cacheDirectory: String, executable: String, expertThreads: Int) {
        self.cacheDirectory = cacheDirectory
        self.executable = executable
        self.expertThreads = expertThreads
    }
}

/// One line of results: a layer shape (`clients == 1`, serial) or a point of the concurrency sweep.
public struct BenchResult: Sendable {
    public var name: String
    public var tokens: Int
    public var clients: Int
    public var meshTokensPerSecond: Double
    public var inprocessTokensPerSecond: Double
    public var meshP50: Double
    public var meshP99: Double
    public var inprocessP50: Double
    public var echoP50: Double
    /// The same request over `ForwardStream` (one long-lived stream, one request at a time), and the echo of the
    /// same payload over a stream (layer shapes only; 0 otherwise).
    public var meshStreamP50: Double = 0
    public var meshStreamP99: Double = 0
    public var echoStreamP50: Double = 0
    /// Router CPU per token on the stream path.
    public var routerCPUPerTokenStream: Double = 0
    /// Messages the router sent to experts per token (unary path; `moemesh_router_expert_messages_total`).
    public var messagesPerToken: Double = 0
    /// Experts each token chose.
    public var expertsPerToken: Int = 0
    public var wireBytesPerToken: Double
    public var routerCPUPerToken: Double
    public var expertCPUPerToken: Double
    /// CPU per token of the same layer in process on one BLAS thread, as each expert process computes (`--threads
    /// 1`): the experts' FFNs, plus a gate and a combine of a few µs. Expert CPU beyond it is what the hop costs the
    /// experts (layer shapes at one client; 0 otherwise).
    public var ffnCPUPerToken: Double = 0
    /// Throughput of the same sweep point with dynamic batching off (sweep only).
    public var unbatchedTokensPerSecond: Double?

    /// `(expert CPU − FFN CPU) / messages`, per token: what one expert message costs its expert beyond the FFN.
    public var expertCPUBeyondFFNPerMessage: Double? {
        guard self.ffnCPUPerToken > 0, self.messagesPerToken > 0 else { return nil }
        return (self.expertCPUPerToken - self.ffnCPUPerToken) / self.messagesPerToken
    }

    public var ratio: Double {
        self.inprocessTokensPerSecond > 0 ? self.meshTokensPerSecond / self.inprocessTokensPerSecond : 0
    }
}

/// Kernel micro-benchmarks for one token count.
public struct KernelResult: Sendable {
    public var tokens: Int
    public var gateMicroseconds: Double
    public var dispatchMicroseconds: Double
    public var combineMicroseconds: Double
    public var ffnGFLOPS: Double
    public var sgemmGFLOPS: Double
    /// An expert's weight bytes ÷ its FFN time, and the same bytes ÷ `sgemv`'s time over them for one row (the
    /// memory's speed as OpenBLAS reaches it; the same figure at every T), both over every expert of the layer in
    /// turn so that the weights come from memory.
    public var ffnWeightGigabytesPerSecond: Double
    public var sgemvWeightGigabytesPerSecond: Double
    public var ffnOverSgemm: Double { self.sgemmGFLOPS > 0 ? self.ffnGFLOPS / self.sgemmGFLOPS : 0 }
}

/// Runs the in-process reference and the real mesh on the same model, interleaved, plus the floors: a bare echo
/// of the same payload over the same transport settings, and the raw sgemm rate of the expert's GEMM shapes.
public struct BenchRunner: Sendable {
    public let configuration: BenchConfiguration
    public let logger: Logger
    public let progress: @Sendable (String) -> Void

    public init(configuration: BenchConfiguration, logger: Logger, progress: @escaping @Sendable (String) -> Void) {
        self.configuration = configuration
        self.logger = logger
        self.progress = progress
    }

    public func run(
        emitLayer: @escaping @Sendable (BenchResult) -> Void, emitKernel: @escaping @Sendable (KernelResult) -> Void,
        emitFault: @escaping @Sendable (FaultResult) -> Void = { _ in }
    ) async throws {
        let configuration = self.configuration
        self.progress("preparing the model")
        let model = try DemoModel.ensure(cacheDirectory: configuration.cacheDirectory, shape: configuration.shape)
        let checkpoint = try MoECheckpoint(path: model.path)
        let reference = try InProcessMoE(checkpoint: checkpoint, precision: configuration.precision)
        let serving = ServingConfiguration()

        for tokens in configuration.tokens {
            self.progress("kernels, T = \(tokens)")
            emitKernel(
                try Self.measureKernels(
                    checkpoint: checkpoint, reference: reference, tokens: tokens,
                    seconds: min(2, configuration.secondsPerShape)))
        }

        // The floor of one hop: gRPC's C++ core answering in C++ (what a data-plane message costs without a service).
        let echo = try CoreEchoServer()
        defer { echo.stop() }
        self.progress("starting the mesh")
        try await self.withMesh(modelPath: model.path, expertsPerProcess: 1) { ready, metricsPort in
            try await self.measureMesh(
                meshReady: ready, metricsPort: metricsPort, echo: echo.endpoint, modelPath: model.path,
                reference: reference, serving: serving, emitLayer: emitLayer)
        }
        if let shape = configuration.manyExperts {
            self.progress("preparing the \(shape.experts)-expert model")
            let many = try DemoModel.ensure(cacheDirectory: configuration.cacheDirectory, shape: shape)
            let manyReference = try InProcessMoE(
                checkpoint: try MoECheckpoint(path: many.path), precision: configuration.precision)
            self.progress("starting the \(shape.experts)-expert mesh")
            try await self.withMesh(modelPath: many.path, expertsPerProcess: configuration.manyExpertsPerProcess) {
                ready, metricsPort in
                let channels = try serving.dataPlaneChannelConfiguration()
                let router = try DataPlaneChannel(target: ready.router.description, configuration: channels)
                let echoChannel = try DataPlaneChannel(target: echo.endpoint.description, configuration: channels)
                self.progress("layer, top-\(shape.topK) of \(shape.experts), T = 1")
                var result = try await self.measureLayer(
                    tokens: 1, router: router, echo: echoChannel, reference: manyReference,
                    routerPID: ready.processes.last!.pid, expertPIDs: ready.processes.dropLast().map(\.pid),
                    metricsPort: metricsPort)
                result.name =
                    "decode, top-\(shape.topK) of \(shape.experts) on \(ready.processes.count - 1)"
                emitLayer(result)
            }
            self.progress("")
        }
        if configuration.hungReplica > .zero {
            self.progress("a hung replica (2 replicas per expert, 4 clients)")
            let phase = HungReplicaPhase(configuration: configuration, modelPath: model.path, logger: self.logger)
            for result in try await phase.run(
                hung: configuration.hungReplica, hiddenSize: configuration.shape.hiddenSize)
            {
                emitFault(result)
            }
            self.progress("")
        }
    }

    /// Runs `body` against a local mesh of the model at `modelPath` (`expertsPerProcess` experts per expert process),
    /// its router serving `/metrics` on the port `body` gets; the mesh stops gracefully at the end, never by
    /// cancellation.
    private func withMesh(
        modelPath: String, expertsPerProcess: Int,
        _ body: @Sendable (LocalMesh.Started, Int) async throws -> Void
    ) async throws {
        let configuration = self.configuration
        // The started mesh, or nil if it ended before it was ready.
        let started = SetOnce<LocalMesh.Started?>()
        var meshConfiguration = LocalMesh.Configuration(
            executable: configuration.executable, modelPath: modelPath, expertThreads: configuration.expertThreads,
            routerPort: 0,
            routerArguments: [
                // Any free port, read from the router's ready line: a port chosen here could be taken meanwhile.
                "--log-level", "warning", "--expert-wire-dtype", configuration.wireDType.rawValue, "--http-port", "0",
            ] + configuration.routerArguments,
            expertArguments: ["--precision", configuration.precision.rawValue],
            unixSockets: configuration.unixSockets)
        meshConfiguration.expertsPerProcess = expertsPerProcess
        let mesh = LocalMesh(
            configuration: meshConfiguration, logger: self.logger, onCoordinatorListening: { _ in },
            onReady: { started.set($0) })
        let meshGroup = ServiceGroup(services: [mesh], logger: self.logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { started.set(nil) }
                try await meshGroup.run()
            }
            do {
                guard let ready = await started.wait() ?? nil,
                    let metrics = await ready.processes.last?.waitForReadyLine(role: "http", timeout: .seconds(60))
                else {
                    throw LocalMesh.StartError.childNotReady(name: "bench mesh", status: nil)
                }
                try await body(ready, metrics.port)
            } catch {
                await meshGroup.triggerGracefulShutdown()
                try? await group.waitForAll()
                throw error
            }
            await meshGroup.triggerGracefulShutdown()
            try await group.waitForAll()
        }
    }

    /// The layer shapes and the concurrency sweep against a started mesh.
    private func measureMesh(
        meshReady: LocalMesh.Started, metricsPort: Int, echo echoEndpoint: ServiceEndpoint, modelPath: String,
        reference: InProcessMoE, serving: ServingConfiguration, emitLayer: (BenchResult) -> Void
    ) async throws {
        let configuration = self.configuration
        // A second router on the same experts (reached the same way), with batching off, for the sweep's baseline.
        let unbatchedRouter = try await ChildProcess.start(
            name: "router (no batching)", executable: configuration.executable,
            arguments: [
                "router", "--model", modelPath, "--port", "0", "--batching", "off", "--log-level", "warning",
                "--expert-wire-dtype", configuration.wireDType.rawValue, "--coordinator",
                meshReady.coordinator.description,
                "--router-id", "bench-no-batching", "--unix-sockets", configuration.unixSockets ? "on" : "off",
            ])
        defer { unbatchedRouter.signal() }
        guard let unbatched = await unbatchedRouter.waitForReadyLine(role: "router", timeout: .seconds(60)) else {
            throw LocalMesh.StartError.childNotReady(name: unbatchedRouter.name, status: unbatchedRouter.pollExit())
        }
        let routerPID = meshReady.processes.last!.pid
        let expertPIDs = meshReady.processes.dropLast().map(\.pid)
        let channels = try serving.dataPlaneChannelConfiguration()
        let router = try DataPlaneChannel(target: meshReady.router.description, configuration: channels)
        let echo = try DataPlaneChannel(target: echoEndpoint.description, configuration: channels)
        let unbatchedChannel = try DataPlaneChannel(target: unbatched.description, configuration: channels)
        for tokens in configuration.tokens {
            self.progress("layer, T = \(tokens)")
            emitLayer(
                try await self.measureLayer(
                    tokens: tokens, router: router, echo: echo, reference: reference, routerPID: routerPID,
                    expertPIDs: expertPIDs, metricsPort: metricsPort))
        }
        for clients in configuration.clients {
            self.progress("concurrency, \(clients) clients")
            emitLayer(
                try await self.measureConcurrency(
                    clients: clients, router: router, unbatched: unbatchedChannel, reference: reference,
                    routerPID: routerPID, expertPIDs: expertPIDs))
        }
        self.progress("")
    }

    /// CPU per token of `reference`'s layer 0 on `hidden` with one BLAS thread (this process's CPU, the mesh idle).
    private static func singleThreadedCPUPerToken(
        reference: InProcessMoE, hidden: Matrix, seconds: Double
    ) async throws -> Double {
        let threads = BLAS.threadCount
        BLAS.threadCount = 1
        defer { BLAS.threadCount = threads }
        _ = try await reference.forward(layer: "0", hidden: hidden)
        let clock = ContinuousClock()
        let deadline = clock.now + .milliseconds(Int(seconds * 1000))
        let started = processCPUSeconds()
        var calls = 0
        while clock.now < deadline || calls < 5 {
            _ = try await reference.forward(layer: "0", hidden: hidden)
            calls += 1
        }
        return (processCPUSeconds() - started) * 1e6 / Double(calls * hidden.rows)
    }

    private func randomHidden(tokens: Int, seed: UInt64) -> Matrix {
        let width = self.configuration.shape.hiddenSize
        return Matrix(
            rows: tokens, columns: width,
            values: ModelSynthesizer.uniform(count: tokens * width, scale: 1.7, seed: seed))
    }

    /// One layer shape, serial: mesh, in-process and echo calls interleaved.
    private func measureLayer(
        tokens: Int, router: DataPlaneChannel, echo: DataPlaneChannel, reference: InProcessMoE, routerPID: Int32,
        expertPIDs: [Int32], metricsPort: Int
    ) async throws -> BenchResult {
        let hidden = self.randomHidden(tokens: tokens, seed: UInt64(tokens))
        var request = Moemesh_V1_ForwardRequest()
        request.layer = "0"
        request.hiddenStates = Moemesh_V1_Tensor(hidden, dtype: .f32)
        var echoRequest = Moemesh_V1_EchoRequest()
        echoRequest.tensor = request.hiddenStates
        for _ in 0..<3 {
            _ = try await Self.forward(router, request)
            _ = try await reference.forward(layer: "0", hidden: hidden)
            _ = try await Self.echo(echo, echoRequest)
        }
        var mesh = LatencySamples(), local = LatencySamples(), bare = LatencySamples()
        let clock = ContinuousClock()
        let routerCPU = cpuSeconds(routerPID)
        let expertCPU = expertPIDs.map(cpuSeconds).reduce(0, +)
        var wireBytes = 0
        let messages = Self.expertMessages(metricsPort: metricsPort)
        let deadline = clock.now + .milliseconds(Int(self.configuration.secondsPerShape * 1000))
        while (clock.now < deadline || mesh.count < 5) && mesh.count < 2000 {
            var response = Moemesh_V1_ForwardResponse()
            mesh.append(try await clock.measure { response = try await Self.forward(router, request) })
            local.append(try await clock.measure { _ = try await reference.forward(layer: "0", hidden: hidden) })
            bare.append(try await clock.measure { _ = try await Self.echo(echo, echoRequest) })
            if mesh.count == 1 {
                wireBytes = Self.wireBytes(request: request, response: response, reference: reference, hidden: hidden)
            }
        }
        let calls = Double(mesh.count * tokens)
        var result = BenchResult(
            name: tokens <= 8 ? "decode" : "prefill", tokens: tokens, clients: 1,
            meshTokensPerSecond: calls / (mesh.total / 1e6),
            inprocessTokensPerSecond: Double(local.count * tokens) / (local.total / 1e6),
            meshP50: mesh.p50, meshP99: mesh.p99, inprocessP50: local.p50, echoP50: bare.p50,
            wireBytesPerToken: Double(wireBytes) / Double(tokens),
            routerCPUPerToken: (cpuSeconds(routerPID) - routerCPU) * 1e6 / calls,
            expertCPUPerToken: (expertPIDs.map(cpuSeconds).reduce(0, +) - expertCPU) * 1e6 / calls)
        result.messagesPerToken = (Self.expertMessages(metricsPort: metricsPort) - messages) / calls
        result.expertsPerToken = reference.pipelines["0"]?.spec.topK ?? 0
        result.ffnCPUPerToken = try await Self.singleThreadedCPUPerToken(
            reference: reference, hidden: hidden, seconds: min(1, self.configuration.secondsPerShape))

        // The stream path a model runner uses: ForwardStream, and the echo over a stream, one message at a time.
        let forwardStream = SerialBridgeStream(channel: router, method: "/moemesh.v1.Router/ForwardStream")
        defer { forwardStream.close() }
        let echoStream = SerialBridgeStream(channel: echo, method: TransportBenchmark.streamMethod)
        defer { echoStream.close() }
        let forwardBytes: [UInt8] = try request.serializedBytes()
        let echoBytes: [UInt8] = try echoRequest.serializedBytes()
        @Sendable func streamed() async throws {
            let answer = try Moemesh_V1_ForwardResponse(
                serializedBytes: try await forwardStream.roundTrip(forwardBytes))
            if answer.hasError { throw answer.error.rpcError }
        }
        for _ in 0..<3 {
            try await streamed()
            _ = try await echoStream.roundTrip(echoBytes)
        }
        var streamedSamples = LatencySamples(), streamEcho = LatencySamples()
        let streamRouterCPU = cpuSeconds(routerPID)
        let streamDeadline = clock.now + .milliseconds(Int(self.configuration.secondsPerShape * 1000))
        while (clock.now < streamDeadline || streamedSamples.count < 5) && streamedSamples.count < 2000 {
            streamedSamples.append(try await clock.measure { try await streamed() })
            streamEcho.append(try await clock.measure { _ = try await echoStream.roundTrip(echoBytes) })
        }
        result.meshStreamP50 = streamedSamples.p50
        result.meshStreamP99 = streamedSamples.p99
        result.echoStreamP50 = streamEcho.p50
        result.routerCPUPerTokenStream =
            (cpuSeconds(routerPID) - streamRouterCPU) * 1e6 / Double(streamedSamples.count * tokens)
        return result
    }

    /// Expert messages the router has sent so far (its `/metrics`); 0 when it cannot be read.
    static func expertMessages(metricsPort: Int) -> Double {
        guard let metrics = Loopback.get(port: metricsPort, path: "/metrics") else { return 0 }
        let series = "moemesh_router_expert_messages_total "
        for line in metrics.body.split(separator: "\n") where line.hasPrefix(series) {
            return Double(line.dropFirst(series.count)) ?? 0
        }
        return 0
    }

    /// `Router/Forward` over the data plane.
    static func forward(_ router: DataPlaneChannel, _ request: Moemesh_V1_ForwardRequest) async throws
        -> Moemesh_V1_ForwardResponse
    {
        let answer = try await router.unary("/moemesh.v1.Router/Forward", request: try request.serializedBytes())
        return try Moemesh_V1_ForwardResponse(serializedBytes: answer)
    }

    /// The core's echo, called from Swift over the data plane as the router is (protobuf both ways).
    static func echo(_ echo: DataPlaneChannel, _ request: Moemesh_V1_EchoRequest) async throws
        -> Moemesh_V1_EchoResponse
    {
        let answer = try await echo.unary(TransportBenchmark.unaryMethod, request: try request.serializedBytes())
        return try Moemesh_V1_EchoResponse(serializedBytes: answer)
    }

    /// Protobuf payload bytes of one call: client ↔ router, and router ↔ each expert (rows both ways).
    private static func wireBytes(
        request: Moemesh_V1_ForwardRequest, response: Moemesh_V1_ForwardResponse, reference: InProcessMoE,
        hidden: Matrix
    ) -> Int {
        let outer =
            ((try? request.serializedBytes() as [UInt8])?.count ?? 0)
            + ((try? response.serializedBytes() as [UInt8])?.count ?? 0)
        guard let pipeline = reference.pipelines["0"], let decision = try? pipeline.route(hidden) else { return outer }
        let plan = DispatchPlan(decision)
        var inner = 0
        for expert in plan.activeExperts {
            var compute = Moemesh_V1_ComputeRequest()
            compute.layer = "0"
            compute.expert = Int32(expert)
            compute.rows = Moemesh_V1_Tensor(plan.gather(hidden, expert: expert), dtype: .f32)
            let size = (try? compute.serializedBytes() as [UInt8])?.count ?? 0
            inner += 2 * size
        }
        return outer + inner
    }

    /// Decode (T = 1) with `clients` concurrent clients, batching on and off, and the in-process layer with as many
    /// concurrent callers.
    private func measureConcurrency(
        clients: Int, router: DataPlaneChannel, unbatched: DataPlaneChannel, reference: InProcessMoE,
        routerPID: Int32, expertPIDs: [Int32]
    ) async throws -> BenchResult {
        let seconds = self.configuration.secondsPerShape
        let requests = (0..<clients).map { client -> Moemesh_V1_ForwardRequest in
            var request = Moemesh_V1_ForwardRequest()
            request.layer = "0"
            request.hiddenStates = Moemesh_V1_Tensor(
                self.randomHidden(tokens: 1, seed: UInt64(1000 + client)), dtype: .f32)
            return request
        }
        func drive(_ call: @escaping @Sendable (Int) async throws -> Void) async throws -> (LatencySamples, Double) {
            let clock = ContinuousClock()
            let start = clock.now
            let deadline = start + .milliseconds(Int(seconds * 1000))
            let samples = try await withThrowingTaskGroup(of: LatencySamples.self) { group in
                for client in 0..<clients {
                    group.addTask {
                        var samples = LatencySamples()
                        while clock.now < deadline {
                            samples.append(try await clock.measure { try await call(client) })
                        }
                        return samples
                    }
                }
                var all = LatencySamples()
                for try await samples in group { all.append(contentsOf: samples) }
                return all
            }
            let elapsed = clock.now - start
            let (s, atto) = elapsed.components
            return (samples, Double(samples.count) / (Double(s) + Double(atto) / 1e18))
        }
        _ = try await drive { client in _ = try await Self.forward(unbatched, requests[client]) }
        let (_, unbatchedRate) = try await drive { client in _ = try await Self.forward(unbatched, requests[client]) }
        let routerCPU = cpuSeconds(routerPID)
        let expertCPU = expertPIDs.map(cpuSeconds).reduce(0, +)
        let (meshSamples, meshRate) = try await drive { client in _ = try await Self.forward(router, requests[client]) }
        let calls = Double(meshSamples.count)
        let routerCPUPerToken = (cpuSeconds(routerPID) - routerCPU) * 1e6 / calls
        let expertCPUPerToken = (expertPIDs.map(cpuSeconds).reduce(0, +) - expertCPU) * 1e6 / calls
        let hidden = requests.map { request in
            Matrix(
                rows: 1, columns: self.configuration.shape.hiddenSize,
                values: request.hiddenStates.data.withUnsafeBytes { DType.f32.decodeFloats($0) })
        }
        let (localSamples, localRate) = try await drive { client in
            _ = try await reference.forward(layer: "0", hidden: hidden[client])
        }
        return BenchResult(
            name: "decode, \(clients) clients", tokens: 1, clients: clients, meshTokensPerSecond: meshRate,
            inprocessTokensPerSecond: localRate, meshP50: meshSamples.p50, meshP99: meshSamples.p99,
            inprocessP50: localSamples.p50, echoP50: 0, wireBytesPerToken: 0, routerCPUPerToken: routerCPUPerToken,
            expertCPUPerToken: expertCPUPerToken, unbatchedTokensPerSecond: unbatchedRate)
    }

    /// Gate, dispatch, combine and expert FFN for T tokens, and the raw sgemm rate of the FFN's two GEMMs.
    static func measureKernels(checkpoint: MoECheckpoint, reference: InProcessMoE, tokens: Int, seconds: Double) throws
        -> KernelResult
    {
        let layer = try checkpoint.layer("0")
        let pipeline = reference.pipelines["0"]!
        let (h, i) = (layer.hiddenSize, layer.intermediateSize)
        let hidden = Matrix(
            rows: tokens, columns: h, values: ModelSynthesizer.uniform(count: tokens * h, scale: 1.7, seed: 5))
        // Every expert of the layer, read once: weight GB/s go over them in turn, so that the weights come from
        // memory (one expert of this size fits a 32 MiB L3 nearly whole).
        let experts = try (0..<layer.numExperts).map { expert in
            let weights = try checkpoint.expertWeights(layer: layer, expert: expert)
            guard case .gated(let gate, let up, let down, _) = weights else {
                preconditionFailure("the bench model has SwiGLU experts")
            }
            return (kernel: CPUExpertKernel(weights: weights), gateUp: gate.values + up.values, down: down)
        }
        let kernels = experts.map(\.kernel)
        let kernel = kernels[0], down = experts[0].down
        let gateUp = Matrix(rows: 2 * i, columns: h, values: experts[0].gateUp)
        let intermediate = Matrix(
            rows: tokens, columns: i, values: ModelSynthesizer.uniform(count: tokens * i, scale: 1, seed: 6))
        func time(_ body: () throws -> Void) rethrows -> Double {
            let clock = ContinuousClock()
            try body()  // warm-up
            var best = Double.infinity
            let deadline = clock.now + .milliseconds(Int(seconds * 1000))
            var runs = 0
            while clock.now < deadline || runs < 5 {
                let (s, atto) = try clock.measure(body).components
                best = min(best, Double(s) * 1e6 + Double(atto) / 1e12)
                runs += 1
            }
            return best
        }
        let decision = try pipeline.route(hidden)
        let plan = DispatchPlan(decision)
        let outputs = (0..<layer.numExperts).map {
            plan.rowCount(ofExpert: $0) > 0 ? plan.gather(hidden, expert: $0) : nil
        }
        let gateTime = try time { _ = try pipeline.route(hidden) }
        let dispatchTime = time {
            let plan = DispatchPlan(decision)
            for expert in plan.activeExperts { _ = plan.gather(hidden, expert: expert) }
        }
        let combineTime = time { _ = Combiner.combine(decision, plan: plan, expertOutputs: outputs, hiddenSize: h) }
        let ffnTime = time { _ = kernel.forward(hidden) }
        let sgemmTime = time {
            _ = BLAS.multiplyTransposed(hidden, gateUp)
            _ = BLAS.multiplyTransposed(intermediate, down)
        }
        var gateUpOut = [Float](repeating: 0, count: 2 * i), downOut = [Float](repeating: 0, count: h)
        var next = 0
        let sgemvTime = time {
            let expert = experts[next]
            next = (next + 1) % experts.count
            expert.gateUp.withUnsafeBufferPointer { w in
                gateUpOut.withUnsafeMutableBufferPointer { y in
                    BLAS.multiplyVector(hidden.values, w.baseAddress!, into: y.baseAddress!, n: 2 * i, k: h)
                }
            }
            expert.down.values.withUnsafeBufferPointer { w in
                downOut.withUnsafeMutableBufferPointer { y in
                    BLAS.multiplyVector(intermediate.values, w.baseAddress!, into: y.baseAddress!, n: h, k: i)
                }
            }
        }
        let everyExpertFFNTime = time {
            _ = kernels[next].forward(hidden)
            next = (next + 1) % kernels.count
        }
        let flops = 2.0 * Double(tokens) * Double(h) * Double(3 * i)
        let weightBytes = Double(3 * h * i * MemoryLayout<Float>.size)
        return KernelResult(
            tokens: tokens, gateMicroseconds: gateTime, dispatchMicroseconds: dispatchTime,
            combineMicroseconds: combineTime,
            ffnGFLOPS: flops / ffnTime / 1e3, sgemmGFLOPS: flops / sgemmTime / 1e3,
            ffnWeightGigabytesPerSecond: weightBytes / everyExpertFFNTime / 1e3,
            sgemvWeightGigabytesPerSecond: weightBytes / sgemvTime / 1e3)
    }
}

/// CPU time a process has used so far, in seconds (0 once it is gone).
private func cpuSeconds(_ pid: Int32) -> Double { ProcessStatus.read(pid: pid)?.cpuSeconds ?? 0 }

/// gRPC's C++ core answering echoes in C++ alone (`mm_bench_echo_server_start`): the floor of one data-plane hop.
final class CoreEchoServer: Sendable {
    private nonisolated(unsafe) let server: OpaquePointer
    let endpoint: ServiceEndpoint

    init() throws {
        var error = [CChar](repeating: 0, count: 256)
        guard let server = mm_bench_echo_server_start("127.0.0.1:0", 64 << 20, &error, error.count) else {
            throw DataPlaneSetupError(error.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
        self.server = server
        self.endpoint = ServiceEndpoint(host: "127.0.0.1", port: Int(mm_server_port(server)))
    }

    func stop() { mm_server_shutdown(self.server, 0, nil) }
}
