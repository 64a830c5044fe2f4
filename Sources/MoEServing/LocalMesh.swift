import Logging
import ServiceLifecycle

/// A mesh of local OS processes on one machine: one `moemesh expert` process per expert group and one
/// `moemesh router`, all children of this process, started in order and stopped together.
///
/// Each child prints its ready line (`expert listening on HOST:PORT`); the router is started once every expert
/// has, with their endpoints. Children exit by themselves if this process dies (`--parent-pid`).
public struct LocalMesh: Service {
    public struct Configuration: Sendable {
        /// The `moemesh` binary to start.
        public var executable: String
        public var modelPath: String
        /// One expert process per selection (e.g. `*:0`, `*:1`, ...), times `replicas`.
        public var expertGroups: [String]
        /// Processes per expert group. With more than one, a replica that dies is logged and the mesh keeps
        /// serving on the others (the router retries its calls there).
        public var replicas: Int
        /// OpenBLAS threads per expert process.
        public var expertThreads: Int
        public var host: String
        public var routerPort: Int
        /// How long each child may take to announce it serves.
        public var startTimeout: Duration
        /// Extra arguments for the router (e.g. `--expert-timeout-ms`).
        public var routerArguments: [String]

        public init(
            executable: String, modelPath: String, expertGroups: [String], replicas: Int = 1, expertThreads: Int = 1,
            host: String = "127.0.0.1", routerPort: Int = 50051, startTimeout: Duration = .seconds(120),
            routerArguments: [String] = []
        ) {
            self.executable = executable
            self.modelPath = modelPath
            self.expertGroups = expertGroups
            self.replicas = max(1, replicas)
            self.expertThreads = expertThreads
            self.host = host
            self.routerPort = routerPort
            self.startTimeout = startTimeout
            self.routerArguments = routerArguments
        }
    }

    public enum StartError: Error, CustomStringConvertible {
        case childNotReady(name: String, status: Int32?)
        case childExited(name: String, status: Int32)

        public var description: String {
            switch self {
            case .childNotReady(let name, let status):
                status.map { "\(name) exited with status \($0) before it was ready (see its log above)" }
                    ?? "\(name) did not announce that it serves in time"
            case .childExited(let name, let status):
                "\(name) exited unexpectedly with status \(status)"
            }
        }
    }

    /// What a started mesh consists of.
    public struct Started: Sendable {
        public let router: ServiceEndpoint
        public let experts: [ServiceEndpoint]
        /// Every child process, the router last.
        public let processes: [ChildProcess]
    }

    public let configuration: Configuration
    public let logger: Logger
    private let onReady: @Sendable (Started) -> Void

    /// - Parameter onReady: called once every process serves.
    public init(
        configuration: Configuration, logger: Logger,
        onReady: @escaping @Sendable (Started) -> Void = { ReadyLine.print(role: "router", endpoint: $0.router) }
    ) {
        self.configuration = configuration
        self.logger = logger
        self.onReady = onReady
    }

    public func run() async throws {
        let configuration = self.configuration
        let parent = String(getpid())
        var children: [ChildProcess] = []
        do {
            // Start every expert process at once, then wait for each to announce its port.
            let groups = configuration.expertGroups.flatMap { group in
                (0..<configuration.replicas).map { (group: group, replica: $0) }
            }
            for (index, item) in groups.enumerated() {
                let group = item.group
                let name = configuration.replicas > 1 ? "expert \(index) (\(group), replica \(item.replica))" : "expert \(index) (\(group))"
                children.append(
                    try ChildProcess(
                        name: name, executable: configuration.executable,
                        arguments: [
                            "expert", "--model", configuration.modelPath, "--experts", group,
                            "--host", configuration.host, "--port", "0",
                            "--threads", String(configuration.expertThreads), "--parent-pid", parent,
                        ]))
            }
            var endpoints: [ServiceEndpoint] = []
            for child in children {
                guard let endpoint = await child.waitForReadyLine(role: "expert", timeout: configuration.startTimeout)
                else { throw StartError.childNotReady(name: child.name, status: child.pollExit()) }
                self.logger.info("expert ready", metadata: ["name": "\(child.name)", "address": "\(endpoint)"])
                endpoints.append(endpoint)
            }
            let router = try ChildProcess(
                name: "router", executable: configuration.executable,
                arguments: [
                    "router", "--model", configuration.modelPath, "--host", configuration.host,
                    "--port", String(configuration.routerPort), "--parent-pid", parent,
                ] + endpoints.flatMap { ["--expert", $0.description] } + configuration.routerArguments)
            children.append(router)
            guard let routerEndpoint = await router.waitForReadyLine(role: "router", timeout: configuration.startTimeout)
            else { throw StartError.childNotReady(name: router.name, status: router.pollExit()) }
            self.onReady(Started(router: routerEndpoint, experts: endpoints, processes: children))

            // Serve until shutdown. The router dying, or an expert without replicas, ends the mesh with an error;
            // a replica dying is logged while others serve its experts.
            var exited = Set<Int32>()
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                for child in children where !exited.contains(child.pid) {
                    guard let status = child.pollExit() else { continue }
                    exited.insert(child.pid)
                    if child.name == "router" || configuration.replicas == 1 {
                        throw StartError.childExited(name: child.name, status: status)
                    }
                    self.logger.error(
                        "expert replica exited; the others serve its experts",
                        metadata: ["name": "\(child.name)", "status": "\(status)"])
                }
                try? await Task.sleep(for: .milliseconds(200))
            }
        } catch {
            await Self.stopAll(children, logger: self.logger)
            throw error
        }
        await Self.stopAll(children, logger: self.logger)
    }

    /// Stops the router first (it drains its calls), then the experts.
    static func stopAll(_ children: [ChildProcess], logger: Logger) async {
        for child in children.reversed() where child.name == "router" {
            let status = await child.stop()
            logger.info("stopped", metadata: ["name": "\(child.name)", "status": "\(status)"])
        }
        await withTaskGroup(of: Void.self) { group in
            for child in children where child.name != "router" {
                group.addTask {
                    let status = await child.stop()
                    logger.info("stopped", metadata: ["name": "\(child.name)", "status": "\(status)"])
                }
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
