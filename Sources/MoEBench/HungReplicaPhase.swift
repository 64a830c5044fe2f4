import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import MoECoordinator
import MoECore
import MoELocalMesh
import MoEModel
import MoEProto
import MoEServing
import MoEWire
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// One phase of the hung-replica measurement.
public struct FaultResult: Sendable {
    public var phase: String
    public var clients: Int
    public var requests: Int
    /// Calls that ended with an error (deadline included).
    public var lost: Int
    public var requestsPerSecond: Double
    public var p50: Double
    public var p99: Double
    /// This phase's throughput over the healthy phase's.
    public var throughputVsHealthy: Double
}

/// A mesh with 2 replicas per expert under `clients` concurrent decode clients (T = 1, unary `Forward`, each call with
/// a `deadline`): healthy, then one replica of expert 0 stopped (SIGSTOP: a hung process, a stuck device, a half-open
/// connection look the same to the router) for `hung`, then resumed. Calls are counted in the phase they end in.
struct HungReplicaPhase {
    let configuration: BenchConfiguration
    let modelPath: String
    let logger: Logger
    var clients = 4
    var deadline: Duration = .seconds(5)
    var warmUp: Duration = .seconds(2)
    var healthy: Duration = .seconds(4)
    var after: Duration = .seconds(2)

    func run(hung: Duration, hiddenSize: Int) async throws -> [FaultResult] {
        // The started mesh, or nil if it ended before it was ready.
        let started = SetOnce<LocalMesh.Started?>()
        let mesh = LocalMesh(
            configuration: .init(
                executable: self.configuration.executable, modelPath: self.modelPath, replicas: 2,
                expertThreads: self.configuration.expertThreads, routerPort: 0,
                routerArguments: ["--log-level", "warning"] + self.configuration.routerArguments,
                unixSockets: self.configuration.unixSockets),
            logger: self.logger, onCoordinatorListening: { _ in },
            onReady: { started.set($0) })
        let group = ServiceGroup(services: [mesh], logger: self.logger)
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            // Stopped gracefully at the end, never by cancellation (a cancelled NIO server may trap).
            tasks.addTask {
                defer { started.set(nil) }
                try await group.run()
            }
            guard let mesh = await started.wait() ?? nil else {
                try await tasks.waitForAll()  // the mesh's error
                throw LocalMesh.StartError.childNotReady(name: "bench mesh", status: nil)
            }
            let results: [FaultResult]
            do {
                results = try await self.measure(mesh: mesh, hung: hung, hiddenSize: hiddenSize)
            } catch {
                await group.triggerGracefulShutdown()
                _ = try? await tasks.next()
                throw error
            }
            await group.triggerGracefulShutdown()
            try await tasks.next()
            return results
        }
    }

    private func measure(mesh: LocalMesh.Started, hung: Duration, hiddenSize: Int) async throws -> [FaultResult] {
        let replicas = await mesh.control.topology().replicas
            .filter { $0.experts.contains { $0.expert == 0 } }
            .sorted { $0.id < $1.id }
        guard replicas.count == 2, let victim = Int32(replicas[0].instance) else {
            throw BenchError("expected 2 replicas of expert 0 with process ids, got \(replicas.map(\.instance))")
        }
        let serving = ServingConfiguration()
        let requests = (0..<self.clients).map { client in
            Moemesh_V1_ForwardRequest.with {
                $0.layer = "0"
                $0.hiddenStates = Moemesh_V1_Tensor(
                    Matrix(
                        rows: 1, columns: hiddenSize,
                        values: ModelSynthesizer.uniform(count: hiddenSize, scale: 1.7, seed: UInt64(7000 + client))),
                    dtype: .f32)
            }
        }
        let phases = ["warm-up", "healthy", "one replica hung (SIGSTOP)", "after SIGCONT"]
        let tally = PhaseTally(phases: phases.count)
        let elapsed = try await withGRPCClient(transport: try serving.makeClientTransport(to: mesh.router)) {
            connection in
            let router = Moemesh_V1_Router.Client(wrapping: connection)
            let options = serving.callOptions(timeout: self.deadline)
            return try await withThrowingTaskGroup(of: Void.self, returning: [Duration].self) { group in
                for client in 0..<self.clients {
                    group.addTask {
                        let clock = ContinuousClock()
                        while tally.phase.load(ordering: .relaxed) < phases.count {
                            let start = clock.now
                            var failed = false
                            do { _ = try await router.forward(requests[client], options: options) } catch {
                                failed = true
                            }
                            let latency = clock.now - start
                            guard tally.record(latency, failed: failed) else { break }
                        }
                    }
                }
                let clock = ContinuousClock()
                var elapsed: [Duration] = []
                for (index, duration) in [self.warmUp, self.healthy, hung, self.after].enumerated() {
                    let start = clock.now
                    if index == 2 { kill(victim, SIGSTOP) }
                    try await Task.sleep(for: duration)  // a timed phase: the duration is the point
                    if index == 2 { kill(victim, SIGCONT) }
                    elapsed.append(clock.now - start)
                    tally.phase.store(index + 1, ordering: .relaxed)
                }
                try await group.waitForAll()
                return elapsed
            }
        }
        let counted = tally.samples.withLock { $0 }
        var results = (1..<phases.count).map { index in
            FaultResult(
                phase: phases[index], clients: self.clients,
                requests: counted[index].latencies.count + counted[index].lost,
                lost: counted[index].lost,
                requestsPerSecond: Double(counted[index].latencies.count) / elapsed[index].seconds,
                p50: counted[index].latencies.p50, p99: counted[index].latencies.p99, throughputVsHealthy: 0)
        }
        for index in results.indices {
            results[index].throughputVsHealthy =
                results[index].requestsPerSecond / max(results[0].requestsPerSecond, 1e-9)
        }
        return results
    }
}

/// The phase now, and each phase's latencies and failed calls.
private final class PhaseTally: Sendable {
    let phase = Atomic<Int>(0)
    let samples: Mutex<[(latencies: LatencySamples, lost: Int)]>

    init(phases: Int) { self.samples = Mutex(Array(repeating: (LatencySamples(), 0), count: phases)) }

    /// Counts a call in the phase it ended in; false once the last phase is over.
    func record(_ latency: Duration, failed: Bool) -> Bool {
        let index = self.phase.load(ordering: .relaxed)
        return self.samples.withLock { samples in
            guard index < samples.count else { return false }
            if failed { samples[index].lost += 1 } else { samples[index].latencies.append(latency) }
            return true
        }
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
