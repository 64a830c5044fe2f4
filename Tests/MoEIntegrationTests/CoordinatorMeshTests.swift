#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
import GRPCCore
import MoECoordinator
import MoECore
import MoEModel
import MoEInProcess
import MoEProcesses
import MoEProto
import MoERouter
import MoERuntime
import MoEServing
import MoEStatusViews
import MoETestSupport
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Starts `moemesh ARGUMENTS` and waits for its ready line of `role`.
func startMoemesh(_ name: String, role: String, _ arguments: [String]) async throws -> (ChildProcess, ServiceEndpoint) {
    let child = try await ChildProcess.start(
        name: name, executable: MoemeshBinary.path, arguments: arguments + ["--log-level", "warning"])
    guard let endpoint = await child.waitForReadyLine(role: role, timeout: .seconds(60)) else {
        child.signal(SIGKILL)
        throw TestFailure("\(name) did not start (status \(child.pollExit().map(String.init) ?? "running"))")
    }
    return (child, endpoint)
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// `moemesh up` with its coordinator's and router's endpoints.
func withCoordinatedUp(
    model: String, extraArguments: [String] = [],
    _ body: (_ router: ServiceEndpoint, _ coordinator: ServiceEndpoint) async throws -> Void
) async throws {
    let up = try await ChildProcess.start(
        name: "up", executable: MoemeshBinary.path,
        arguments: [
            "up", "--model", model, "--port", "0", "--coordinator-port", "0", "--threads", "1", "--log-level",
            "warning",
            "--parent-pid", String(getpid()),
        ] + extraArguments)
    defer { if up.pollExit() == nil { up.signal(SIGKILL) } }
    let coordinator = try #require(
        await up.waitForReadyLine(role: "coordinator", timeout: .seconds(60)), "no coordinator")
    let router = try #require(
        await up.waitForReadyLine(role: "router", timeout: .seconds(120)), "moemesh up did not start")
    try await body(router, coordinator)
    #expect(await up.stop(grace: .seconds(20)) == 0)
}

/// Polls the coordinator's status until `condition` holds, within `timeout`. A status call that fails is asked again
/// (a host whose link just came back may answer "no route" until its address resolves again); the last failure is
/// thrown when the time is up.
func waitForStatus(
    _ coordinator: ServiceEndpoint, timeout: Duration = .seconds(20),
    _ condition: (CoordinatorStatus) -> Bool
) async throws -> CoordinatorStatus {
    let deadline = ContinuousClock.now + timeout
    while true {
        do {
            let status = try await CoordinatorClient.with(endpoint: coordinator) { try await $0.status() }
            if condition(status) { return status }
            guard ContinuousClock.now < deadline else { return status }
        } catch {
            guard ContinuousClock.now < deadline else { throw error }
        }
        try await Task.sleep(for: .milliseconds(100))
    }
}

/// Correct and total answers across concurrent workers.
final class AnswerTally: Sendable {
    let answered = Mutex(0)
    let wrong = Mutex(0)
    let errors = Mutex<[String]>([])
    private let waiters = Mutex<[(count: Int, continuation: CheckedContinuation<Void, Never>)]>([])

    func count(right: Bool) {
        let answered = self.answered.withLock {
            $0 += 1; return $0
        }
        if !right { self.wrong.withLock { $0 += 1 } }
        let ready = self.waiters.withLock { waiters in
            defer { waiters.removeAll { $0.count <= answered } }
            return waiters.filter { $0.count <= answered }.map(\.continuation)
        }
        for waiter in ready { waiter.resume() }
    }

    /// Returns once `count` answers (right or wrong) have come: tests act on progress, not on time.
    func waitForAnswers(_ count: Int) async {
        await withCheckedContinuation { continuation in
            let reached = self.answered.withLock { answered in
                if answered >= count { return true }
                self.waiters.withLock { $0.append((count, continuation)) }
                return false
            }
            if reached { continuation.resume() }
        }
    }

    /// Runs `calls` requests on `client` (or until `until` says stop), checking each against `reference`.
    func drive(
        client: RouterClient, model: SmallModel, reference: InProcessMoE, worker: Int, calls: Int,
        until stop: @Sendable () -> Bool = { false }
    ) async {
        for call in 0..<calls {
            if stop() { break }
            let hidden = model.randomHidden(tokens: 3, seed: UInt64(worker * 100_000 + call))
            do {
                // A deadline, so that a call that never ends fails the test instead of hanging it.
                let result = try await client.forward(
                    layer: "0", hiddenStates: try Tensor(hidden), timeout: .seconds(20))
                let expected = try await reference.forward(layer: "0", hidden: hidden)
                self.count(right: relativeError(result.output.floats(), expected.output.values) <= 1e-5)
            } catch {
                self.errors.withLock { $0.append("\(error)") }
                self.count(right: false)
            }
        }
    }
}

@Suite("coordinator over real processes", .serialized)
struct CoordinatorMeshTests {
    static let shape = ModelSynthesizer.Shape(experts: 4, topK: 2, hiddenSize: 64, intermediateSize: 96, layers: 1)

    struct DemoSummary: Decodable {
        var requestsSent: Int
        var requestsFailed: Int
        var balancednessBefore: Double
        var balancednessAfter: Double
        var replicasAdded: Int
        var replicasRemoved: Int
        var coldStartMs: Double
        var durationS: Double
    }

    @Test(
        "moemesh demo: under skewed load the hottest experts get replicas, balancedness rises, idle experts go to zero and a request for one succeeds"
    )
    func demoScales() async throws {
        let cache = TemporaryDirectory()
        defer { cache.remove() }
        let demo = try await ChildProcess.start(
            name: "demo", executable: MoemeshBinary.path,
            arguments: [
                "demo", "--json", "--before-s", "6", "--scaling-s", "16", "--after-s", "6", "--idle-s", "5",
                "--cache-dir", cache.path,
            ])
        defer { if demo.pollExit() == nil { demo.signal(SIGKILL) } }
        var last = ""
        for await line in demo.outputLines { last = line }
        #expect(await demo.waitForExit(timeout: .seconds(30)) == 0)
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let summary = try decoder.decode(DemoSummary.self, from: Data(last.utf8))
        #expect(summary.requestsSent > 100)
        #expect(summary.requestsFailed == 0)
        // Hot groups replicated, plus the cold start; idle groups removed.
        #expect(summary.replicasAdded >= 2)
        #expect(summary.replicasRemoved >= 1)
        #expect(
            summary.balancednessAfter > summary.balancednessBefore,
            "\(summary.balancednessBefore) → \(summary.balancednessAfter)")
        #expect(summary.coldStartMs > 0)
    }

    @Test(
        "moemesh up: the router reaches its experts through their Unix domain sockets (status shows which), or over TCP with --unix-sockets off; answers equal the in-process layer either way",
        arguments: [true, false])
    func sameHostLinks(unixSockets: Bool) async throws {
        let model = try SmallModel(shape: Self.shape, seed: 43)
        defer { model.remove() }
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        try await withCoordinatedUp(model: model.path, extraArguments: ["--unix-sockets", unixSockets ? "on" : "off"]) {
            router, coordinator in
            let tally = AnswerTally()
            try await RouterClient.with(endpoint: router) { client in
                await tally.drive(client: client, model: model, reference: reference, worker: 0, calls: 12)
            }
            #expect(tally.answered.withLock { $0 } == 12)
            #expect(tally.wrong.withLock { $0 } == 0, "\(tally.errors.withLock { $0.prefix(3) })")
            // Links come with the router's next demand report.
            let status = try await waitForStatus(coordinator) { status in
                status.replicas.count == 4 && status.replicas.allSatisfy { $0.links.count == 1 }
            }
            for replica in status.replicas {
                let link = try #require(replica.links.first)
                if unixSockets {
                    #expect(!replica.replica.unixSocket.isEmpty)
                    #expect(replica.replica.hostID == HostIdentity.current)
                    #expect(link.hasSuffix(": unix \(replica.replica.unixSocket)"), "\(link)")
                    #expect(
                        access(replica.replica.unixSocket, F_OK) == 0, "no socket file at \(replica.replica.unixSocket)"
                    )
                } else {
                    #expect(replica.replica.unixSocket.isEmpty)
                    #expect(link.hasSuffix(": tcp \(replica.replica.endpoint)"), "\(link)")
                }
            }
            #expect(StatusReport(status).replicas.allSatisfy { $0.linkKinds == (unixSockets ? "unix" : "tcp") })
        }
    }

    @Test(
        "kill -9 of an expert's only replica under load: requests wait for the replacement the scaler starts; none lost"
    )
    func killOnlyReplica() async throws {
        let model = try SmallModel(shape: Self.shape, seed: 41)
        defer { model.remove() }
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        try await withCoordinatedUp(model: model.path) { router, coordinator in
            let before = try await waitForStatus(coordinator) { $0.replicas.count == 4 }
            let victim = try #require(before.replicas.first { $0.replica.group == "*:1" })
            let pid = try #require(Int32(victim.replica.instance))
            let tally = AnswerTally()
            try await RouterClient.with(endpoint: router) { client in
                await withTaskGroup(of: Void.self) { group in
                    for worker in 0..<3 {
                        group.addTask {
                            await tally.drive(
                                client: client, model: model, reference: reference, worker: worker, calls: 30)
                        }
                    }
                    group.addTask {
                        await tally.waitForAnswers(20)
                        kill(pid, SIGKILL)
                    }
                }
            }
            #expect(!MoemeshBinary.isAlive(pid))
            // Killed after 20 of 90 answers: the other 70 needed expert 1's replacement (most of them route to it).
            #expect(tally.answered.withLock { $0 } == 90)
            #expect(tally.wrong.withLock { $0 } == 0, "\(tally.errors.withLock { $0.prefix(3) })")
            let after = try await waitForStatus(coordinator) { status in
                status.groups.allSatisfy { $0.servingReplicas == 1 }
                    && !status.replicas.contains { $0.replica.id == victim.replica.id }
            }
            #expect(after.groups.map(\.servingReplicas) == [1, 1, 1, 1])
            #expect(after.decisions.isEmpty)
        }
    }

    @Test("drain: a replica with a call in flight finishes it, then the scaler stops it")
    func drainFinishesInFlight() async throws {
        let model = try SmallModel(shape: Self.shape, seed: 42)
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let reference = try InProcessMoE(checkpoint: checkpoint)
        try await withCoordinatedUp(model: model.path, extraArguments: ["--expert-compute-delay-ms", "1500"]) {
            router, coordinator in
            let hidden = model.randomHidden(tokens: 1, seed: 5)
            let expected = try await reference.forward(layer: "0", hidden: hidden)
            let expert = Int(expected.routing.topkIDs[0])
            let status = try await waitForStatus(coordinator) { $0.replicas.count == 4 }
            let replica = try #require(status.replicas.first { $0.replica.group == "*:\(expert)" })
            let pid = try #require(Int32(replica.replica.instance))
            try await RouterClient.with(endpoint: router) { client in
                let call = Task { try await client.forward(layer: "0", hiddenStates: try Tensor(hidden)) }
                // The replica reports the call's row in flight (it computes for 1.5 s; heartbeats every 0.5 s).
                _ = try await waitForStatus(coordinator) { status in
                    status.replicas.contains {
                        $0.replica.id == replica.replica.id && $0.load.inFlightRows > 0
                    }
                }
                let drained = try await CoordinatorClient.with(endpoint: coordinator) {
                    try await $0.drain(replica: replica.replica.id)
                }
                #expect(drained.state == .draining)
                // Still alive while its call runs.
                #expect(MoemeshBinary.isAlive(pid))
                let result = try await call.value
                #expect(relativeError(result.output.floats(), expected.output.values) <= 1e-5)
            }
            let after = try await waitForStatus(coordinator) { status in
                !status.replicas.contains { $0.replica.id == replica.replica.id }
            }
            #expect(!after.replicas.contains { $0.replica.id == replica.replica.id })
            #expect(after.groups.first { $0.group == "*:\(expert)" }?.desiredReplicas == 0)
            #expect(await ChildProcessWatch.waitUntilGone(pid, timeout: .seconds(10)))
        }
    }

    @Test("the coordinator restarting does not interrupt serving; replicas and the router come back to the new one")
    func coordinatorRestart() async throws {
        let model = try SmallModel(shape: Self.shape, seed: 43)
        defer { model.remove() }
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        let timing = ["--heartbeat-ms", "200", "--lease-ms", "1500"]
        var (coordinatorProcess, coordinator) = try await startMoemesh(
            "coordinator", role: "coordinator",
            ["coordinator", "--model", model.path, "--port", "0", "--scaler", "none"] + timing)
        var processes = [coordinatorProcess]
        defer { processes.forEach { $0.signal(SIGKILL) } }
        for expert in 0..<4 {
            let (process, _) = try await startMoemesh(
                "expert \(expert)", role: "expert",
                [
                    "expert", "--model", model.path, "--experts", "*:\(expert)", "--threads", "1", "--coordinator",
                    coordinator.description,
                ])
            processes.append(process)
        }
        let (routerProcess, router) = try await startMoemesh(
            "router", role: "router",
            [
                "router", "--model", model.path, "--port", "0", "--coordinator", coordinator.description, "--router-id",
                "router-under-test",
            ])
        processes.append(routerProcess)

        let tally = AnswerTally()
        let stop = StopSignal()
        try await RouterClient.with(endpoint: router) { client in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<2 {
                    group.addTask {
                        await tally.drive(
                            client: client, model: model, reference: reference, worker: worker, calls: 100_000
                        ) {
                            stop.isSet
                        }
                    }
                }
                await tally.waitForAnswers(20)
                coordinatorProcess.signal(SIGKILL)
                _ = await coordinatorProcess.waitForExit(timeout: .seconds(5))
                // Serving goes on without a coordinator: 40 more answers, more than a lease (1.5 s) of traffic.
                await tally.waitForAnswers(tally.answered.withLock { $0 } + 40)
                (coordinatorProcess, coordinator) = try await startMoemesh(
                    "coordinator", role: "coordinator",
                    ["coordinator", "--model", model.path, "--port", String(coordinator.port), "--scaler", "none"]
                        + timing)
                processes.append(coordinatorProcess)
                // Replicas and the router come back to the new coordinator while requests keep being answered.
                _ = try await waitForStatus(coordinator) {
                    $0.replicas.count == 4 && $0.routers.contains("router-under-test")
                }
                await tally.waitForAnswers(tally.answered.withLock { $0 } + 20)
                stop.set()
                try await group.waitForAll()
            }
        }
        #expect(tally.answered.withLock { $0 } > 20)
        #expect(tally.wrong.withLock { $0 } == 0, "\(tally.errors.withLock { $0.prefix(3) })")
        let status = try await waitForStatus(coordinator) {
            $0.replicas.count == 4 && $0.routers.contains("router-under-test")
        }
        #expect(status.replicas.count == 4)
        #expect(status.routers.contains("router-under-test"))
    }
}

enum ChildProcessWatch {
    /// Waits until no process `pid` runs (a child of another process, so not reaped here).
    static func waitUntilGone(_ pid: Int32, timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if !MoemeshBinary.isAlive(pid) { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return !MoemeshBinary.isAlive(pid)
    }
}
