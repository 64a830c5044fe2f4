#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
import MoECore
import Logging
import MoECoordinator
import MoEModel
import MoEProcesses
import MoEProto
import MoEServing
import MoEStatusViews
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A whole mesh of local OS processes on one machine, under an embedded coordinator: the coordinator's API in this
/// process, `replicas` `moemesh expert` processes per group of `expertsPerProcess` expert indices (the local scaler,
/// which replaces replicas that die), then one `moemesh router` that follows the coordinator's topology. Children exit by themselves if this
/// process dies (`--parent-pid`).
public struct LocalMesh: Service {
    public struct Configuration: Sendable {
        /// The `moemesh` binary to start.
        public var executable: String
        public var modelPath: String
        /// Replicas each expert group starts with.
        public var replicas: Int
        /// OpenBLAS threads per expert process.
        public var expertThreads: Int
        /// Consecutive expert indices each expert process hosts (`--experts-per-process`; 1: a process per index).
        public var expertsPerProcess = 1
        public var host: String
        public var routerPort: Int
        /// The coordinator's port (0: any free port).
        public var coordinatorPort: Int
        /// How long the experts, then the router, may take to serve.
        public var startTimeout: Duration
        /// Extra arguments for the router (e.g. `--expert-timeout-ms`) and for every expert.
        public var routerArguments: [String]
        public var expertArguments: [String]
        /// Leases, drains and autoscaling.
        public var coordinator: Coordinator.Settings
        /// Port of the coordinator's status page, `/status.json` and `/metrics` (0: any free port); nil: none.
        public var httpPort: Int?
        /// The router reaches the experts through Unix domain sockets (in a private folder under /tmp, removed at
        /// the end) instead of TCP loopback.
        public var unixSockets: Bool
        /// TLS, accepted tokens and the mesh's own token, for the coordinator served in this process (the router
        /// and experts get theirs through `routerArguments` and `expertArguments`).
        public var security = ServingConfiguration()

        public init(
            executable: String, modelPath: String, replicas: Int = 1, expertThreads: Int = 1,
            host: String = "127.0.0.1", routerPort: Int = 50051, coordinatorPort: Int = 0,
            startTimeout: Duration = .seconds(120), routerArguments: [String] = [], expertArguments: [String] = [],
            coordinator: Coordinator.Settings = Coordinator.Settings(), httpPort: Int? = nil, unixSockets: Bool = true
        ) {
            self.unixSockets = unixSockets
            self.httpPort = httpPort
            self.executable = executable
            self.modelPath = modelPath
            self.replicas = max(1, replicas)
            self.expertThreads = expertThreads
            self.host = host
            self.routerPort = routerPort
            self.coordinatorPort = coordinatorPort
            self.startTimeout = startTimeout
            self.routerArguments = routerArguments
            self.expertArguments = expertArguments
            self.coordinator = coordinator
        }
    }

    public enum StartError: Error, CustomStringConvertible {
        case childNotReady(name: String, status: Int32?)
        case childExited(name: String, status: Int32)
        case socketDirectory(String)

        public var description: String {
            switch self {
            case .childNotReady(let name, let status):
                status.map { "\(name) exited with status \($0) before it was ready (see its log above)" }
                    ?? "\(name) did not announce that it serves in time"
            case .childExited(let name, let status):
                "\(name) exited unexpectedly with status \(status)"
            case .socketDirectory(let reason):
                "could not create a folder for the experts' Unix domain sockets under /tmp: \(reason) (or run with --unix-sockets off)"
            }
        }
    }

    /// What a started mesh consists of.
    public struct Started: Sendable {
        public let router: ServiceEndpoint
        public let coordinator: ServiceEndpoint
        /// The coordinator itself, in this process.
        public let control: Coordinator
        /// The expert replicas serving at start.
        public let experts: [ServiceEndpoint]
        /// Every child process at start, the router last.
        public let processes: [ChildProcess]
    }

    public let configuration: Configuration
    public let logger: Logger
    private let onCoordinatorListening: @Sendable (ServiceEndpoint) -> Void
    private let onReady: @Sendable (Started) -> Void

    /// - Parameters:
    ///   - onCoordinatorListening: called once the coordinator listens (default: its ready line).
    ///   - onReady: called once every process serves (default: the router's ready line).
    public init(
        configuration: Configuration, logger: Logger,
        onCoordinatorListening: @escaping @Sendable (ServiceEndpoint) -> Void = {
            ReadyLine.print(role: "coordinator", endpoint: $0)
        },
        onReady: @escaping @Sendable (Started) -> Void = { ReadyLine.print(role: "router", endpoint: $0.router) }
    ) {
        self.configuration = configuration
        self.logger = logger
        self.onCoordinatorListening = onCoordinatorListening
        self.onReady = onReady
    }

    public func run() async throws {
        let configuration = self.configuration
        let checkpoint = try MoECheckpoint(path: configuration.modelPath)
        let coordinator = Coordinator(checkpoint: checkpoint, settings: configuration.coordinator, logger: self.logger)
        let server = CoordinatorServer(
            coordinator: coordinator,
            serving: {
                var serving = configuration.security
                serving.host = configuration.host
                serving.port = configuration.coordinatorPort
                return serving
            }())
        // The coordinator's servers stop when told to, after the processes, never by cancellation (see `StopSignal`).
        let serving = Task { try await server.serve(untilGracefulShutdown: false) }
        var http: (endpoint: HTTPEndpoint, task: Task<Void, any Error>)? = nil
        let socketDirectory = configuration.unixSockets ? try SocketDirectory() : nil
        defer {
            server.stop()
            http?.endpoint.stop.set()
            socketDirectory?.remove()
        }
        try await withThrowingDiscardingTaskGroup { group in
            let endpoint = try await server.listeningEndpoint
            self.logger.info("coordinator serving", metadata: ["address": "\(endpoint)"])
            self.onCoordinatorListening(endpoint)
            if let port = configuration.httpPort {
                let endpoint = HTTPEndpoint(
                    host: configuration.host, port: port,
                    routes: StatusPage.routes(status: { await coordinator.status() }),
                    logger: self.logger, tls: configuration.security.tls,
                    onListening: { ReadyLine.print(role: "http", endpoint: $0) })
                // Like the coordinator's server: stopped when told, after the processes, never by cancellation.
                http = (endpoint, Task { try await endpoint.run() })
            }
            let scaler = LocalProcessScaler(
                configuration: .init(
                    executable: configuration.executable, modelPath: configuration.modelPath,
                    groups: ScalingGroup.perExpertIndex(
                        layers: checkpoint.layers, expertsPerGroup: configuration.expertsPerProcess),
                    initialReplicas: configuration.replicas,
                    coordinator: endpoint, host: configuration.host, threads: configuration.expertThreads,
                    extraArguments: configuration.expertArguments, unixSocketDirectory: socketDirectory?.path),
                logger: self.logger)
            group.addTask { await scaler.reap() }
            var router: ChildProcess? = nil
            do {
                try await coordinator.start(scaler: scaler)
                server.health.setAll(.serving)
                try await self.waitForExperts(checkpoint: checkpoint, coordinator: coordinator, scaler: scaler)
                let child = try await ChildProcess.start(
                    name: "router", executable: configuration.executable,
                    arguments: [
                        "router", "--model", configuration.modelPath, "--host", configuration.host,
                        "--port", String(configuration.routerPort), "--parent-pid", String(getpid()),
                        "--coordinator", endpoint.description,
                    ] + (configuration.unixSockets ? [] : ["--unix-sockets", "off"]) + configuration.routerArguments,
                    environment: RoleEnvironment.current)
                router = child
                guard
                    let routerEndpoint = await child.waitForReadyLine(
                        role: "router", timeout: configuration.startTimeout)
                else { throw StartError.childNotReady(name: child.name, status: child.pollExit()) }
                let experts = await coordinator.topology().replicas.compactMap { ServiceEndpoint($0.endpoint) }
                self.onReady(
                    Started(
                        router: routerEndpoint, coordinator: endpoint, control: coordinator, experts: experts,
                        processes: scaler.processes + [child]))

                // Serve until shutdown; the router dying ends the mesh (experts that die are replaced by `reap`).
                let routerExited = await cancelWhenGracefulShutdown { await child.exited.wait() != nil }
                if routerExited, let status = child.pollExit() {
                    throw StartError.childExited(name: child.name, status: status)
                }
            } catch {
                await Self.stop(router: router, scaler: scaler, logger: self.logger)
                throw error
            }
            await Self.stop(router: router, scaler: scaler, logger: self.logger)
            group.cancelAll()
        }
        server.stop()
        http?.endpoint.stop.set()
        _ = await (serving.result, http?.task.result)
    }

    /// Waits until every expert of the model has a serving replica; an expert process that exits first, the start
    /// timeout or shutdown end the wait.
    private func waitForExperts(checkpoint: MoECheckpoint, coordinator: Coordinator, scaler: LocalProcessScaler)
        async throws
    {
        enum Outcome: Sendable { case covered, exited(name: String, status: Int32), timedOut }
        let experts = checkpoint.layers.flatMap(\.expertAddresses)
        let timeout = self.configuration.startTimeout
        let outcome = await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Outcome?.self) { group in
                group.addTask {
                    await coordinator.waitUntilCovered(experts)
                    return Task.isCancelled ? nil : .covered
                }
                group.addTask {
                    await scaler.firstUnexpectedExit.wait().map { .exited(name: $0.name, status: $0.status) }
                }
                group.addTask {
                    try? await Task.sleep(for: timeout)  // the start timeout
                    return Task.isCancelled ? nil : .timedOut
                }
                defer { group.cancelAll() }
                return await group.next() ?? nil
            }
        }
        switch outcome {
        case .covered: return
        case .exited(let name, let status): throw StartError.childNotReady(name: name, status: status)
        case .timedOut, nil: throw StartError.childNotReady(name: "expert replicas", status: nil)
        }
    }

    /// Stops the router first (it finishes its calls), then the experts.
    static func stop(router: ChildProcess?, scaler: LocalProcessScaler, logger: Logger) async {
        if let router {
            let status = await router.stop()
            logger.info("stopped", metadata: ["name": "\(router.name)", "status": "\(status)"])
        }
        await scaler.stopAll()
    }
}

/// A private folder (mode 0700) under /tmp for a local mesh's Unix domain sockets: short enough for a socket path
/// (108 bytes) wherever `$TMPDIR` points.
struct SocketDirectory {
    let path: String

    init() throws {
        var template = Array("/tmp/moemesh-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw LocalMesh.StartError.socketDirectory(String(cString: strerror(errno)))
        }
        self.path = String(cString: made)
    }

    /// Removes the folder and the sockets left in it.
    func remove() { try? FileManager.default.removeItem(atPath: self.path) }
}
