import GRPCCore
import Logging
import MoECore
import MoEDataPlane
import MoELocalMesh
import MoEModel
import MoEProcesses
import MoEProto
import MoEServing
import MoEWire
import ServiceLifecycle
import Synchronization

/// An open-loop load against a local mesh (`moemesh bench overload`). First the capacity: closed-loop clients, a
/// ramp of 1, 2, 4, … concurrent callers, the best goodput (answers within their deadline per second). Then calls
/// arriving at fixed multiples of it whatever the answers (open loop, as users arrive), each with its deadline,
/// spread over several connections: what was answered in time, what was refused and how fast, what failed
/// otherwise (a GOAWAY shows as UNAVAILABLE on many calls at once), and the router's resident memory before,
/// at its peak and after the load.
public struct OverloadBenchmark: Sendable {
    public var executable: String
    public var cacheDirectory: String
    public var expertThreads: Int
    public var shape = ModelSynthesizer.Shape(experts: 8, topK: 2, hiddenSize: 1024, intermediateSize: 2816, layers: 1)
    /// Tokens per call.
    public var tokens = 4
    public var deadline: Duration = .seconds(1)
    /// Seconds of load per multiple.
    public var seconds: Double = 10
    public var multiples: [Double] = [1, 2, 4]
    /// Client connections the load is spread over.
    public var connections = 4
    public var unixSockets = true

    public init(executable: String, cacheDirectory: String, expertThreads: Int) {
        self.executable = executable
        self.cacheDirectory = cacheDirectory
        self.expertThreads = expertThreads
    }

    /// One multiple of the capacity.
    public struct Row: Sendable {
        public var multiple: Double
        public var offeredPerSecond: Double
        public var answered: Int
        public var goodputPerSecond: Double
        public var goodputOverCapacity: Double
        public var answeredP50: Double
        public var answeredP99: Double
        /// RESOURCE_EXHAUSTED: refused by the router or an expert (load shedding, a connection's call limit).
        public var refused: Int
        public var refusedP50: Double
        /// Every other failure, by code (DEADLINE_EXCEEDED: answered too late; UNAVAILABLE: a lost connection).
        public var failures: [RPCError.Code: Int]
        /// One message of each failure code, as the client saw it.
        public var failureSamples: [RPCError.Code: String]
        public var routerPeakMiB: Double
    }

    public struct Report: Sendable {
        public var capacityPerSecond: Double
        /// Clients of the ramp that reached it.
        public var capacityClients: Int
        public var rows: [Row]
        public var routerMiBBefore: Double
        public var routerMiBAfter: Double
        /// A refusal's message, as the client saw it.
        public var refusalSample: String
    }

    public func run(logger: Logger, progress: @escaping @Sendable (String) -> Void) async throws -> Report {
        progress("preparing the model")
        let model = try DemoModel.ensure(cacheDirectory: self.cacheDirectory, shape: self.shape)
        progress("starting the mesh")
        let started = SetOnce<LocalMesh.Started?>()
        let mesh = LocalMesh(
            configuration: .init(
                executable: self.executable, modelPath: model.path, expertThreads: self.expertThreads, routerPort: 0,
                routerArguments: ["--log-level", "error"], unixSockets: self.unixSockets),
            logger: logger, onCoordinatorListening: { _ in }, onReady: { started.set($0) })
        let group = ServiceGroup(services: [mesh], logger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                defer { started.set(nil) }
                try await group.run()
            }
            do {
                guard let ready = await started.wait() ?? nil else {
                    throw LocalMesh.StartError.childNotReady(name: "overload mesh", status: nil)
                }
                let report = try await self.measure(ready, progress: progress)
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
                return report
            } catch {
                await group.triggerGracefulShutdown()
                try? await tasks.waitForAll()
                throw error
            }
        }
    }

    private func measure(_ mesh: LocalMesh.Started, progress: @escaping @Sendable (String) -> Void) async throws
        -> Report
    {
        let routerPID = mesh.processes.last!.pid
        let channels = try (0..<self.connections).map { _ in
            try DataPlaneChannel(target: mesh.router.description)
        }
        var forward = Moemesh_V1_ForwardRequest()
        forward.layer = "0"
        forward.hiddenStates = Moemesh_V1_Tensor(
            Matrix(
                rows: self.tokens, columns: self.shape.hiddenSize,
                values: ModelSynthesizer.uniform(count: self.tokens * self.shape.hiddenSize, scale: 1.7, seed: 9)),
            dtype: .f32)
        let request: [UInt8] = try forward.serializedBytes()
        let deadline = self.deadline
        @Sendable func call(_ index: Int) async -> Outcome {
            let clock = ContinuousClock()
            let start = clock.now
            do {
                _ = try await channels[index % channels.count].unary(
                    "/moemesh.v1.Router/Forward", request: request, deadline: start + deadline)
                return Outcome(latency: clock.now - start, code: nil, message: "")
            } catch let error as RPCError {
                return Outcome(latency: clock.now - start, code: error.code, message: error.message)
            } catch {
                return Outcome(latency: clock.now - start, code: .unknown, message: "\(error)")
            }
        }
        for index in 0..<20 { _ = await call(index) }  // warm-up
        let before = Self.mebibytes(routerPID)

        // The capacity: closed-loop clients, doubling while the goodput grows.
        var capacity = 0.0, capacityClients = 1
        var clients = 1
        while clients <= 64 {
            progress("capacity, \(clients) clients")
            let rate = await Self.closedLoop(clients: clients, seconds: 2, call: call)
            if rate > capacity {
                (capacity, capacityClients) = (rate, clients)
            } else if rate < 0.95 * capacity {
                break
            }
            clients *= 2
        }
        guard capacity > 0 else { throw OverloadBenchmarkError.noAnswers(deadline: self.deadline) }
        var rows: [Row] = []
        var refusalSample = ""
        for multiple in self.multiples {
            progress("open loop at \(multiple)× capacity")
            let peak = Shared(0.0)
            let outcomes = await Self.openLoop(
                rate: multiple * capacity, seconds: self.seconds, call: call,
                sample: { peak.value.withLock { $0 = max($0, Self.mebibytes(routerPID)) } })
            var answered = LatencySamples(), refused = LatencySamples()
            var failures: [RPCError.Code: Int] = [:], samples: [RPCError.Code: String] = [:]
            for outcome in outcomes {
                switch outcome.code {
                case nil: answered.append(outcome.latency)
                case .resourceExhausted?:
                    refused.append(outcome.latency)
                    if refusalSample.isEmpty { refusalSample = outcome.message }
                case let code?:
                    failures[code, default: 0] += 1
                    if samples[code] == nil { samples[code] = outcome.message }
                }
            }
            let goodput = Double(answered.count) / self.seconds
            rows.append(
                Row(
                    multiple: multiple, offeredPerSecond: multiple * capacity, answered: answered.count,
                    goodputPerSecond: goodput, goodputOverCapacity: goodput / capacity,
                    answeredP50: answered.p50, answeredP99: answered.p99, refused: refused.count,
                    refusedP50: refused.p50, failures: failures, failureSamples: samples,
                    routerPeakMiB: peak.value.withLock { $0 }))
        }
        // Memory given back: the router idle after the load, past its heap trimmer's period (5 s).
        progress("after the load")
        try await Task.sleep(for: .seconds(8))
        let after = Self.mebibytes(routerPID)
        progress("")
        return Report(
            capacityPerSecond: capacity, capacityClients: capacityClients, rows: rows, routerMiBBefore: before,
            routerMiBAfter: after, refusalSample: refusalSample)
    }

    struct Outcome: Sendable {
        let latency: Duration
        let code: RPCError.Code?
        let message: String
    }

    /// Answers in time per second of `clients` callers, each calling again as soon as answered.
    static func closedLoop(
        clients: Int, seconds: Double, call: @escaping @Sendable (Int) async -> Outcome
    ) async -> Double {
        let clock = ContinuousClock()
        let end = clock.now + .milliseconds(Int(seconds * 1000))
        let answered = await withTaskGroup(of: Int.self) { group in
            for client in 0..<clients {
                group.addTask {
                    var answered = 0
                    var index = client
                    while clock.now < end {
                        if await call(index).code == nil { answered += 1 }
                        index += clients
                    }
                    return answered
                }
            }
            return await group.reduce(0, +)
        }
        return Double(answered) / seconds
    }

    /// Calls started at `rate` per second for `seconds`, whatever the answers; every outcome. `sample` runs every
    /// 100 ms meanwhile.
    static func openLoop(
        rate: Double, seconds: Double, call: @escaping @Sendable (Int) async -> Outcome,
        sample: @escaping @Sendable () -> Void
    ) async -> [Outcome] {
        let outcomes = Shared<[Outcome]>([])
        let clock = ContinuousClock()
        let start = clock.now
        let end = start + .milliseconds(Int(seconds * 1000))
        let interval = Duration.nanoseconds(Int64(1e9 / rate))
        await withDiscardingTaskGroup { group in
            var next = start
            var index = 0
            var sampled = start
            while next < end {
                // Every call due by now starts now: arrivals keep their rate whatever the sleeps' granularity.
                let now = clock.now
                while next <= now && next < end {
                    let id = index
                    group.addTask {
                        let outcome = await call(id)
                        outcomes.value.withLock { $0.append(outcome) }
                    }
                    next += interval
                    index += 1
                }
                if now - sampled >= .milliseconds(100) {
                    sample()
                    sampled = now
                }
                try? await Task.sleep(until: min(next, now + .milliseconds(1)), clock: .continuous)
            }
        }
        sample()
        return outcomes.value.withLock { $0 }
    }

    /// Resident memory of `pid`, in MiB.
    static func mebibytes(_ pid: Int32) -> Double {
        Double(ProcessStatus.read(pid: pid)?.residentBytes ?? 0) / Double(1 << 20)
    }
}

/// A value shared by concurrent tasks, behind a lock.
private final class Shared<Value: Sendable>: Sendable {
    let value: Mutex<Value>
    init(_ value: Value) { self.value = Mutex(value) }
}

enum OverloadBenchmarkError: Error, CustomStringConvertible {
    case noAnswers(deadline: Duration)

    var description: String {
        switch self {
        case .noAnswers(let deadline):
            "the mesh answered no call within its deadline (\(deadline)): no capacity to load"
        }
    }
}
