import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import MoECoordinator
import MoECore
import MoELocalMesh
import MoEModel
import MoEInProcess
import MoEPolicy
import MoEProto
import MoERuntime
import MoEServing
import MoEStatusViews
import MoEWire
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// `moemesh demo`: a local mesh under the coordinator, a Zipf-skewed load, autoscaling at work, a summary.
///
/// Phases: *before* (autoscaling held: one replica per expert index), *scaling* (the coordinator replicates the
/// hottest groups and scales idle ones to zero), *after* (settled). Balancedness is `mean / max` of the replicas'
/// rows per second (their heartbeats), averaged over the second half of *before* and over *after*. Then one request
/// routed to an expert scaled to zero shows the cold start. Every 8th answer is checked against the in-process layer.
public struct MeshDemo: Sendable {
    public struct Configuration: Sendable {
        public var executable: String
        public var modelPath: String
        public var workers = 4
        public var tokensPerRequest = 8
        public var before: Duration = .seconds(8)
        public var scaling: Duration = .seconds(30)
        public var after: Duration = .seconds(8)
        /// Groups idle this long go to zero replicas.
        public var idleTimeout: Duration = .seconds(8)
        /// The first `hotExperts` expert indices get load, by rank `r` with probability ∝ `1 / r^zipfExponent`.
        public var hotExperts = 6
        public var zipfExponent = 1.2
        public var seed: UInt64 = 7

        public init(executable: String, modelPath: String) {
            self.executable = executable
            self.modelPath = modelPath
        }
    }

    public struct Summary: Sendable, Codable {
        public var requestsSent: Int
        public var requestsFailed: Int
        public var balancednessBefore: Double
        public var balancednessAfter: Double
        public var replicasAdded: Int
        public var replicasRemoved: Int
        public var coldStartMs: Double
        public var durationS: Double

        /// One JSON object, snake_case keys.
        public var json: String {
            let fields: [(String, String)] = [
                ("requests_sent", "\(self.requestsSent)"), ("requests_failed", "\(self.requestsFailed)"),
                ("balancedness_before", DecimalFormat.fixed(self.balancednessBefore, 3)),
                ("balancedness_after", DecimalFormat.fixed(self.balancednessAfter, 3)),
                ("replicas_added", "\(self.replicasAdded)"), ("replicas_removed", "\(self.replicasRemoved)"),
                ("cold_start_ms", DecimalFormat.fixed(self.coldStartMs, 1)),
                ("duration_s", DecimalFormat.fixed(self.durationS, 1)),
            ]
            return "{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}"
        }
    }

    public let configuration: Configuration
    public let logger: Logger
    /// Where the live table goes.
    public let display: @Sendable (String) -> Void

    public init(configuration: Configuration, logger: Logger, display: @escaping @Sendable (String) -> Void) {
        self.configuration = configuration
        self.logger = logger
        self.display = display
    }

    private final class Counters: Sendable {
        let sent = Atomic<Int>(0)
        let failed = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
    }

    public func run() async throws -> Summary {
        let started = ContinuousClock.now
        let configuration = self.configuration
        let checkpoint = try MoECheckpoint(path: configuration.modelPath)
        let reference = try InProcessMoE(checkpoint: checkpoint)
        let directions = try checkpoint.layers.map { layer in
            (layer.name, Self.unitRows(try checkpoint.gateWeight(layer: layer)))
        }
        let groups = ScalingGroup.perExpertIndex(layers: checkpoint.layers).count
        var settings = Coordinator.Settings(
            heartbeatInterval: .milliseconds(250), lease: .seconds(2), demandWindow: .seconds(3),
            autoscale: AutoscalePolicy.Settings(
                maxTotalReplicas: 2 * groups, maxReplicasPerGroup: 4, cooldown: .seconds(3),
                idleTimeout: configuration.idleTimeout))
        settings.autoscaleStartsPaused = true
        // The started mesh, or nil if it ended before it was ready.
        let readyMesh = SetOnce<LocalMesh.Started?>()
        let mesh = LocalMesh(
            configuration: .init(
                executable: configuration.executable, modelPath: configuration.modelPath, routerPort: 0,
                routerArguments: ["--log-level", "warning"], expertArguments: ["--log-level", "warning"],
                coordinator: settings),
            logger: self.logger, onCoordinatorListening: { _ in }, onReady: { readyMesh.set($0) })
        let serviceGroup = ServiceGroup(services: [mesh], logger: self.logger)

        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { readyMesh.set(nil) }
                try await serviceGroup.run()
            }
            defer { group.cancelAll() }
            guard let mesh = await readyMesh.wait() ?? nil else {
                try await group.waitForAll()  // the mesh's error
                throw LocalMesh.StartError.childNotReady(name: "demo mesh", status: nil)
            }
            let control = mesh.control
            let counters = Counters()
            let summary = try await withGRPCClient(
                transport: try ServingConfiguration().makeClientTransport(to: mesh.router)
            ) { client in
                let router = Moemesh_V1_Router.Client(wrapping: client)
                return try await withThrowingTaskGroup(of: Void.self, returning: (before: Double, after: Double).self) {
                    load in
                    for worker in 0..<configuration.workers {
                        load.addTask {
                            try await self.drive(
                                worker: worker, router: router, reference: reference, directions: directions,
                                counters: counters)
                        }
                    }
                    defer { counters.stop.store(true, ordering: .relaxed) }
                    let phases = try await self.watch(control: control)
                    counters.stop.store(true, ordering: .relaxed)
                    try await load.waitForAll()
                    return phases
                }
            }
            let (before, after) = summary
            let coldStartMs = try await self.coldStart(
                control: control, router: mesh.router, reference: reference, directions: directions, counters: counters)
            let decisions = await control.status().decisions
            let result = Summary(
                requestsSent: counters.sent.load(ordering: .relaxed),
                requestsFailed: counters.failed.load(ordering: .relaxed),
                balancednessBefore: before, balancednessAfter: after,
                replicasAdded: decisions.reduce(0) { $0 + max(0, $1.to - $1.from) },
                replicasRemoved: decisions.reduce(0) { $0 + max(0, $1.from - $1.to) },
                coldStartMs: coldStartMs, durationS: (ContinuousClock.now - started).seconds)
            await serviceGroup.triggerGracefulShutdown()
            try await group.next()
            return result
        }
    }

    /// Rows of `weights` scaled to unit length: the direction that makes the gate prefer each expert.
    static func unitRows(_ weights: Matrix) -> [[Float]] {
        (0..<weights.rows).map { row in
            let values = (0..<weights.columns).map { weights[row, $0] }
            let norm = values.reduce(0) { $0 + $1 * $1 }.squareRoot()
            return values.map { $0 / max(norm, 1e-12) }
        }
    }

    /// A token that the gate routes to `first` then `second`: `4 · u_first + 2 · u_second` plus a little noise.
    static func token(first: Int, second: Int, directions: [[Float]], random: inout SequenceRandom) -> [Float] {
        zip(directions[first], directions[second]).map { a, b in
            4 * a + 2 * b + 0.02 * (Float(random.next() % 2001) / 1000 - 1)
        }
    }

    /// An expert index of the hot set, by Zipf rank.
    func zipf(_ random: inout SequenceRandom, excluding: Int? = nil) -> Int {
        let weights = (0..<self.configuration.hotExperts).map {
            $0 == excluding ? 0 : 1 / pow(Double($0 + 1), self.configuration.zipfExponent)
        }
        var draw = Double(random.next() % 1_000_000) / 1_000_000 * weights.reduce(0, +)
        for (index, weight) in weights.enumerated() {
            draw -= weight
            if draw < 0 { return index }
        }
        return weights.lastIndex { $0 > 0 } ?? 0
    }

    private func drive(
        worker: Int, router: Moemesh_V1_Router.Client<HTTP2ClientTransport.Posix>, reference: InProcessMoE,
        directions: [(String, [[Float]])], counters: Counters
    ) async throws {
        var random = SequenceRandom(seed: self.configuration.seed &+ UInt64(worker) &* 7919)
        var call = 0
        while !counters.stop.load(ordering: .relaxed) {
            let (layer, units) = directions[call % directions.count]
            var values: [Float] = []
            for _ in 0..<self.configuration.tokensPerRequest {
                let first = self.zipf(&random)
                values += Self.token(
                    first: first, second: self.zipf(&random, excluding: first), directions: units, random: &random)
            }
            let hidden = Matrix(rows: self.configuration.tokensPerRequest, columns: units[0].count, values: values)
            let right = await self.send(
                hidden, layer: layer, check: call % 8 == 0, router: router, reference: reference)
            counters.sent.add(1, ordering: .relaxed)
            if !right { counters.failed.add(1, ordering: .relaxed) }
            call += 1
        }
    }

    /// One request; false if it failed or (when checked) its answer differs from the in-process layer.
    private func send(
        _ hidden: Matrix, layer: String, check: Bool, router: Moemesh_V1_Router.Client<HTTP2ClientTransport.Posix>,
        reference: InProcessMoE
    ) async -> Bool {
        var request = Moemesh_V1_ForwardRequest()
        request.layer = layer
        request.hiddenStates = Moemesh_V1_Tensor(hidden, dtype: .f32)
        do {
            let response = try await router.forward(
                request, options: ServingConfiguration().callOptions(timeout: .seconds(30)))
            guard check else { return true }
            let output = try response.output.decodeTokenRows(
                field: "output", hiddenSize: hidden.columns, allowedRanks: [2], shapeDescription: "[T, H]"
            ).matrix.values
            let expected = try await reference.forward(layer: layer, hidden: hidden).output.values
            let scale = expected.reduce(0) { max($0, abs($1)) }
            return zip(output, expected).allSatisfy { abs($0 - $1) <= 1e-4 * max(scale, 1) }
        } catch {
            self.logger.error("request failed", metadata: ["error": "\(error)"])
            return false
        }
    }

    /// Runs the phases, printing the live table; returns the balancedness before and after.
    private func watch(control: Coordinator) async throws -> (before: Double, after: Double) {
        let configuration = self.configuration
        let start = ContinuousClock.now
        let scalingStart = start + configuration.before
        let afterStart = scalingStart + configuration.scaling
        let end = afterStart + configuration.after
        var before: [Double] = []
        var after: [Double] = []
        var shownDecisions = 0
        var phase = "before: autoscaling held"
        while ContinuousClock.now < end {
            try await Task.sleep(for: .seconds(1))  // a report line every second: the period is the point
            let now = ContinuousClock.now
            if now >= scalingStart && phase.hasPrefix("before") {
                await control.pauseAutoscaling(false)
                phase = "scaling: the coordinator replicates hot experts and scales idle ones to zero"
            }
            if now >= afterStart && phase.hasPrefix("scaling") { phase = "after: settled" }
            let status = await control.status()
            if now >= start + configuration.before / 2 && now < scalingStart {
                before.append(status.replicaBalancedness)
            }
            if now >= afterStart { after.append(status.replicaBalancedness) }
            let report = StatusReport(status)
            var lines = ["", "[\(Int((now - start).seconds)) s] \(phase)", report.table(replicas: false, decisions: 0)]
            for decision in report.decisions.dropFirst(shownDecisions) {
                lines.append(
                    "  decision: \(decision.group) \(decision.fromReplicas) → \(decision.toReplicas) (\(decision.reason))"
                )
            }
            shownDecisions = report.decisions.count
            self.display(lines.joined(separator: "\n"))
        }
        func mean(_ values: [Double]) -> Double { values.isEmpty ? 0 : values.reduce(0, +) / Double(values.count) }
        return (mean(before), mean(after))
    }

    /// Sends one request whose tokens go to an expert group scaled to zero; returns how long it took, in ms.
    private func coldStart(
        control: Coordinator, router: ServiceEndpoint, reference: InProcessMoE, directions: [(String, [[Float]])],
        counters: Counters
    ) async throws -> Double {
        let status = await control.status()
        guard let cold = status.groups.first(where: { $0.state == "scaled to zero" }),
            let expert = cold.experts.first, let units = directions.first(where: { $0.0 == expert.layer })?.1
        else {
            self.display("no expert group was scaled to zero: no cold start to show")
            return 0
        }
        var random = SequenceRandom(seed: self.configuration.seed)
        let values = (0..<self.configuration.tokensPerRequest).flatMap { _ in
            Self.token(first: expert.expert, second: self.zipf(&random), directions: units, random: &random)
        }
        let hidden = Matrix(rows: self.configuration.tokensPerRequest, columns: units[0].count, values: values)
        let clock = ContinuousClock.now
        let right = try await withGRPCClient(transport: try ServingConfiguration().makeClientTransport(to: router)) {
            client in
            await self.send(
                hidden, layer: expert.layer, check: true, router: .init(wrapping: client), reference: reference)
        }
        let elapsed = (ContinuousClock.now - clock).milliseconds
        counters.sent.add(1, ordering: .relaxed)
        if !right { counters.failed.add(1, ordering: .relaxed) }
        self.display(
            "\ncold start: a request for \(expert) (group \(cold.group), scaled to zero) answered "
                + (right ? "correctly" : "WRONGLY") + " in \(DecimalFormat.fixed(elapsed, 0)) ms")
        return elapsed
    }
}

/// A seeded stream of pseudo-random numbers: `SplitMix64.mix` of a counter.
typealias SequenceRandom = SplitMix64.Generator
