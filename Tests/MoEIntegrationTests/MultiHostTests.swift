#if canImport(Glibc)
    import Glibc
#endif
import MoECoordinator
import MoECore
import MoEModel
import MoEInProcess
import MoEProto
import MoEProcesses
import MoERouter
import MoERuntime
import MoEServing
import MoETestSupport
import Synchronization
import Testing

/// Several hosts on this machine (network namespaces, root only): the coordinator and the router in the root
/// namespace, expert replicas on hosts of their own, reached over their own links.
@Suite("hosts on one machine (network namespaces)", .serialized, .enabled(if: NetworkHosts.available))
struct MultiHostTests {
    static let shape = ModelSynthesizer.Shape(experts: 4, topK: 2, hiddenSize: 64, intermediateSize: 96, layers: 1)

    /// Processes a test started, stopped last first when it ends.
    final class Processes: Sendable {
        private let started = Mutex<[ChildProcess]>([])
        func add(_ process: ChildProcess) { self.started.withLock { $0.append(process) } }
        func stopAll() async {
            for process in self.started.withLock({ $0 }).reversed() { await process.stop() }
        }
    }

    /// Runs `body` on hosts `names`; then, whether it threw or not, stops the processes it started and removes the
    /// hosts.
    static func withHosts(
        _ names: [String], _ body: (NetworkHosts, Processes) async throws -> Void
    ) async throws {
        let hosts = try await NetworkHosts(names)
        let processes = Processes()
        do {
            try await body(hosts, processes)
        } catch {
            await processes.stopAll()
            await hosts.remove()
            throw error
        }
        await processes.stopAll()
        await hosts.remove()
    }

    @Test("protected mode: a coordinator beyond loopback with neither TLS nor tokens refuses another host's admin call")
    func protectedMode() async throws {
        let model = try SmallModel(shape: Self.shape, seed: 71)
        defer { model.remove() }
        try await Self.withHosts(["a"]) { hosts, processes in
            let (coordinator, listening) = try await startMoemesh(
                "coordinator", role: "coordinator",
                ["coordinator", "--model", model.path, "--host", "0.0.0.0", "--port", "0"])
            processes.add(coordinator)
            let prune = ["admin", "prune", "--layer", "0", "--expert", "1", "--coordinator"]
            // From host a: refused (PERMISSION_DENIED: the command fails).
            let remote = try await hosts.start(
                on: "a", prune + ["\(hosts.gateway("a")):\(listening.port)"], label: "admin prune from host a")
            for await _ in remote.outputLines {}
            let refused = await remote.waitForExit(timeout: .seconds(60))
            #expect(refused != nil && refused != 0, "exit status \(String(describing: refused))")
            // From this host (loopback): taken.
            let local = try await ChildProcess.start(
                name: "admin prune from loopback", executable: MoemeshBinary.path,
                arguments: prune + ["127.0.0.1:\(listening.port)"])
            var printed: [String] = []
            for await line in local.outputLines { printed.append(line) }
            #expect(await local.waitForExit(timeout: .seconds(60)) == 0)
            #expect(printed.first?.hasPrefix("pruned: ") == true, "\(printed)")
        }
    }

    /// A coordinator in the test's namespace, listening on every address (hosts reach it on the LAN); returns its
    /// port.
    static func startCoordinator(model: SmallModel, _ processes: Processes) async throws -> Int {
        let (coordinator, listening) = try await startMoemesh(
            "coordinator", role: "coordinator",
            [
                // A test network with neither TLS nor tokens: protected mode would refuse the hosts' registrations.
                "coordinator", "--model", model.path, "--host", "0.0.0.0", "--port", "0", "--heartbeat-ms", "500",
                "--lease-ms", "3000", "--insecure",
            ])
        processes.add(coordinator)
        return listening.port
    }

    /// An expert replica of every expert on each of `names`, bound to its host's address, registered with the
    /// coordinator at `coordinatorPort` of the test's namespace; returns once each is ready.
    static func startExperts(
        on names: [String], hosts: NetworkHosts, model: SmallModel, coordinatorPort: Int, _ processes: Processes
    ) async throws {
        for name in names {
            let expert = try await hosts.start(
                on: name,
                [
                    "expert", "--model", model.path, "--threads", "1", "--host", hosts.address(name), "--port", "0",
                    "--coordinator", "\(hosts.gateway(name)):\(coordinatorPort)", "--parent-pid", String(getpid()),
                    "--log-level", "warning",
                ],
                label: "expert on host \(name)")
            processes.add(expert)
            _ = try #require(await expert.waitForReadyLine(role: "expert", timeout: .seconds(60)), "expert on \(name)")
        }
    }

    @Test(
        "a host cut off the network under load, another host holding replicas of the same experts: no request lost, every answer exact, and the host's replica serves again once its link is back"
    )
    func hostCutOff() async throws {
        let model = try SmallModel(shape: Self.shape, seed: 53)
        defer { model.remove() }
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        try await Self.withHosts(["a", "b"]) { hosts, processes in
            let port = try await Self.startCoordinator(model: model, processes)
            let local = ServiceEndpoint(host: "127.0.0.1", port: port)
            try await Self.startExperts(
                on: hosts.names, hosts: hosts, model: model, coordinatorPort: port, processes)
            let (router, routerEndpoint) = try await startMoemesh(
                "router", role: "router",
                ["router", "--model", model.path, "--port", "0", "--coordinator", local.description])
            processes.add(router)
            let before = try await waitForStatus(local) { $0.replicas.count == 2 }
            let replicaHosts: Set<String> = Set(
                before.replicas.map { replica -> String in
                    replica.replica.endpoint.split(separator: ":").first.map(String.init) ?? ""
                })
            let expectedHosts: Set<String> = [hosts.address("a"), hosts.address("b")]
            #expect(replicaHosts == expectedHosts)

            // 3 clients call until the fault is over: host A's link goes down after 20 answers, stays down until the
            // coordinator has dropped host A's replica (its lease ran out), and comes back up; the clients stop once
            // host A's replica serves again.
            let tally = AnswerTally()
            let done = StopSignal()
            let answeredWhileCut = try await RouterClient.with(endpoint: routerEndpoint) { client in
                try await withThrowingTaskGroup(of: Int?.self) { group in
                    for worker in 0..<3 {
                        group.addTask {
                            await tally.drive(
                                client: client, model: model, reference: reference, worker: worker, calls: .max,
                                until: { done.isSet })
                            return nil
                        }
                    }
                    group.addTask {
                        defer { done.set() }
                        await tally.waitForAnswers(20)
                        try await hosts.setLink("a", up: false)
                        let cut = tally.answered.withLock { $0 }
                        let dropped = try await waitForStatus(local, timeout: .seconds(30)) { status in
                            !status.replicas.contains { $0.replica.endpoint.hasPrefix(hosts.address("a") + ":") }
                        }
                        #expect(dropped.replicas.count == 1, "host A's replica still registered while cut off")
                        let whileCut = tally.answered.withLock { $0 } - cut
                        try await hosts.setLink("a", up: true)
                        let back = try await waitForStatus(local, timeout: .seconds(30)) { status in
                            status.replicas.contains { $0.replica.endpoint.hasPrefix(hosts.address("a") + ":") }
                        }
                        #expect(back.replicas.count == 2, "host A's replica did not register again")
                        return whileCut
                    }
                    var whileCut = 0
                    for try await value in group { if let value { whileCut = value } }
                    return whileCut
                }
            }
            #expect(answeredWhileCut > 0, "nothing was served while host A was cut off")
            #expect(tally.wrong.withLock { $0 } == 0, "\(tally.errors.withLock { $0.prefix(3) })")
        }
    }

    @Test(
        "the coordinator's host cut off under load: routers and experts serve on with what they know, nothing is lost, and the mesh registers with the coordinator again when its link is back"
    )
    func coordinatorHostCutOff() async throws {
        let model = try SmallModel(shape: Self.shape, seed: 59)
        defer { model.remove() }
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        try await Self.withHosts(["c"]) { hosts, processes in
            let coordinator = try await hosts.start(
                on: "c",
                [
                    "coordinator", "--model", model.path, "--host", hosts.address("c"), "--port", "0", "--insecure",
                    "--heartbeat-ms", "500", "--lease-ms", "3000", "--parent-pid", String(getpid()),
                    "--log-level", "warning",
                ],
                label: "coordinator on host c")
            processes.add(coordinator)
            let endpoint = try #require(await coordinator.waitForReadyLine(role: "coordinator", timeout: .seconds(60)))
            // Experts and router on this (the root) host; two replicas of every expert.
            for _ in 0..<2 {
                let (expert, _) = try await startMoemesh(
                    "expert", role: "expert",
                    [
                        "expert", "--model", model.path, "--threads", "1", "--port", "0", "--coordinator",
                        endpoint.description,
                    ])
                processes.add(expert)
            }
            let (router, routerEndpoint) = try await startMoemesh(
                "router", role: "router",
                ["router", "--model", model.path, "--port", "0", "--coordinator", endpoint.description])
            processes.add(router)
            _ = try await waitForStatus(endpoint) { $0.replicas.count == 2 }

            // Clients call on while the coordinator's link goes down (after 20 answers), stays down for 300 more answers
            // (about a lease here, so the coordinator usually drops both replicas meanwhile; what is asserted holds
            // either way), and comes back; they stop 20 answers after both replicas are registered again.
            let tally = AnswerTally()
            let done = StopSignal()
            try await RouterClient.with(endpoint: routerEndpoint) { client in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for worker in 0..<3 {
                        group.addTask {
                            await tally.drive(
                                client: client, model: model, reference: reference, worker: worker, calls: 100_000,
                                until: { done.isSet })
                        }
                    }
                    group.addTask {
                        defer { done.set() }
                        await tally.waitForAnswers(20)
                        try await hosts.setLink("c", up: false)
                        await tally.waitForAnswers(tally.answered.withLock { $0 } + 300)
                        try await hosts.setLink("c", up: true)
                        let back = try await waitForStatus(endpoint, timeout: .seconds(30)) { status in
                            status.replicas.count == 2 && !status.routers.isEmpty
                        }
                        #expect(back.replicas.count == 2, "the replicas did not register again")
                        await tally.waitForAnswers(tally.answered.withLock { $0 } + 20)
                    }
                    try await group.waitForAll()
                }
            }
            #expect(tally.answered.withLock { $0 } >= 340)
            #expect(tally.wrong.withLock { $0 } == 0, "\(tally.errors.withLock { $0.prefix(3) })")
        }
    }

    @Test(
        "a router cut off from one expert host while both still reach the coordinator: the router serves every call exactly from the other host, the coordinator keeps the replica and shows the ejection, and the router uses it again once the path is back"
    )
    func routerCutFromOneExpertHost() async throws {
        let model = try SmallModel(shape: Self.shape, seed: 61)
        defer { model.remove() }
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        try await Self.withHosts(["a", "b", "r"]) { hosts, processes in
            let port = try await Self.startCoordinator(model: model, processes)
            let local = ServiceEndpoint(host: "127.0.0.1", port: port)
            let coordinatorOnLAN = "\(hosts.gateway("r")):\(port)"
            try await Self.startExperts(on: ["a", "b"], hosts: hosts, model: model, coordinatorPort: port, processes)
            let router = try await hosts.start(
                on: "r",
                [
                    "router", "--model", model.path, "--host", hosts.address("r"), "--port", "0", "--coordinator",
                    coordinatorOnLAN, "--router-id", "router-r", "--parent-pid", String(getpid()), "--log-level",
                    "warning",
                ],
                label: "router on host r")
            processes.add(router)
            let routerEndpoint = try #require(await router.waitForReadyLine(role: "router", timeout: .seconds(60)))
            _ = try await waitForStatus(local) { $0.replicas.count == 2 && $0.routers == ["router-r"] }
            let prefixOfA = hosts.address("a") + ":"
            let onA: @Sendable (CoordinatorStatus.ReplicaStatus) -> Bool = { $0.replica.endpoint.hasPrefix(prefixOfA) }

            // 3 clients call (from the test's namespace) until the fault is over: after 20 answers, what host r sends
            // host a is dropped; the path stays closed until the coordinator shows host a's replica ejected by the
            // router (while still registered: host a heartbeats on) and 100 more answers came; then it opens again,
            // and the clients stop once host a's replica reports rows again.
            let tally = AnswerTally()
            let done = StopSignal()
            try await RouterClient.with(endpoint: routerEndpoint) { client in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for worker in 0..<3 {
                        group.addTask {
                            await tally.drive(
                                client: client, model: model, reference: reference, worker: worker, calls: .max,
                                until: { done.isSet })
                        }
                    }
                    group.addTask {
                        defer { done.set() }
                        await tally.waitForAnswers(20)
                        try await hosts.setPath(from: "r", to: "a", open: false)
                        let ejected = try await waitForStatus(local, timeout: .seconds(30)) { status in
                            status.replicas.contains { onA($0) && !$0.ejectedBy.isEmpty }
                        }
                        #expect(ejected.replicas.count == 2, "host a's replica left the topology: it was reachable")
                        #expect(
                            ejected.replicas.first(where: onA)?.ejectedBy.first?.hasPrefix("router-r: ") == true,
                            "\(ejected.replicas.first(where: onA)?.ejectedBy ?? [])")
                        await tally.waitForAnswers(tally.answered.withLock { $0 } + 100)
                        try await hosts.setPath(from: "r", to: "a", open: true)
                        let back = try await waitForStatus(local, timeout: .seconds(90)) { status in
                            status.replicas.contains { onA($0) && $0.load.rowsPerSecond > 0 }
                        }
                        #expect(back.replicas.count == 2)
                    }
                    try await group.waitForAll()
                }
            }
            #expect(tally.answered.withLock { $0 } >= 120)
            #expect(tally.wrong.withLock { $0 } == 0, "\(tally.errors.withLock { $0.prefix(3) })")
        }
    }
}
