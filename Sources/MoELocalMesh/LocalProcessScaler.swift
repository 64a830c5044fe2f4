import Logging
import MoECoordinator
import MoECore
import MoEProcesses
import MoEServing
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Runs replicas as `moemesh expert` child processes of this one, each registering with the coordinator.
/// Keeps each group at its desired count: a replica that dies is replaced (like a Deployment's pods).
public final class LocalProcessScaler: ExpertScaler {
    public struct Configuration: Sendable {
        /// The `moemesh` binary.
        public var executable: String
        public var modelPath: String
        public var groups: [ScalingGroup]
        /// Replicas each group starts with.
        public var initialReplicas: Int
        /// The coordinator replicas register with.
        public var coordinator: ServiceEndpoint
        public var host: String
        /// OpenBLAS threads per replica.
        public var threads: Int
        /// Extra arguments for every replica (`--log-level`, ...).
        public var extraArguments: [String]
        /// A folder for the replicas' Unix domain sockets (`expert-N.sock`, served beside TCP); nil: TCP only.
        public var unixSocketDirectory: String?

        public init(
            executable: String, modelPath: String, groups: [ScalingGroup], initialReplicas: Int,
            coordinator: ServiceEndpoint, host: String = "127.0.0.1", threads: Int = 1, extraArguments: [String] = [],
            unixSocketDirectory: String? = nil
        ) {
            self.unixSocketDirectory = unixSocketDirectory
            self.executable = executable
            self.modelPath = modelPath
            self.groups = groups
            self.initialReplicas = initialReplicas
            self.coordinator = coordinator
            self.host = host
            self.threads = threads
            self.extraArguments = extraArguments
        }
    }

    private struct GroupProcesses {
        /// The group, once asked for replicas (a plan's groups are not in the configuration).
        var group: ScalingGroup? = nil
        var desired = 0
        var children: [ChildProcess] = []
        /// Children being started, not yet in `children`.
        var starting = 0
    }

    public let configuration: Configuration
    private let logger: Logger
    private let state = Mutex<[String: GroupProcesses]>([:])
    private let started = Atomic<Int>(0)
    private let exits = Mutex<[(name: String, status: Int32)]>([])
    /// A child exited: time to reap it and start a replacement (`reap`).
    private let exitEvents: AsyncStream<Void>
    private let exitEventsContinuation: AsyncStream<Void>.Continuation
    /// The first replica that exited by itself.
    public let firstUnexpectedExit = SetOnce<(name: String, status: Int32)>()

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        (self.exitEvents, self.exitEventsContinuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    public var name: String { "local" }
    public var canStart: Bool { true }

    /// Every child process running now.
    public var processes: [ChildProcess] { self.state.withLock { $0.values.flatMap(\.children) } }

    public func initialGroups() async throws -> [(group: ScalingGroup, replicas: Int)] {
        self.configuration.groups.map { ($0, self.configuration.initialReplicas) }
    }

    public func setReplicas(_ replicas: Int, of group: ScalingGroup) async throws {
        self.state.withLock {
            $0[group.name, default: GroupProcesses()].desired = replicas
            $0[group.name]!.group = group
        }
        try await self.reconcile(group)
    }

    public func retire(_ replica: RetiringReplica, leaving replicas: Int, of group: ScalingGroup) async throws {
        let child = self.state.withLock { state -> ChildProcess? in
            state[group.name, default: GroupProcesses()].desired = replicas
            guard let index = state[group.name]?.children.firstIndex(where: { String($0.pid) == replica.instance })
            else { return nil }
            return state[group.name]?.children.remove(at: index)
        }
        guard let child else {
            // Already gone: it exited, or it was stopped as surplus when the group's desired count fell (a drained
            // replica is often the surplus one). Nothing left to stop.
            self.logger.debug(
                "drained replica already stopped", metadata: ["instance": "\(replica.instance)", "group": "\(group)"])
            return
        }
        // SIGTERM: the replica deregisters, finishes its calls and exits. Not awaited (a drain can take its whole
        // grace period, and the coordinator's loop must not wait for it): the child's own exit ends the task.
        let logger = self.logger
        Task {
            let status = await child.stop(grace: .seconds(30))
            logger.info("replica stopped", metadata: ["name": "\(child.name)", "status": "\(status)"])
        }
    }

    /// Replaces replicas that died until shutdown, then stops every child.
    public func run() async throws {
        await cancelWhenGracefulShutdown { await self.reap() }
        await self.stopAll()
    }

    /// Reaps each replica that exits and starts its replacement, as exits happen, until the task is cancelled.
    public func reap() async {
        await self.maintain()
        for await _ in self.exitEvents { await self.maintain() }
    }

    public func stopAll() async {
        let children = self.state.withLock { state in
            defer { for key in state.keys { state[key] = GroupProcesses() } }
            return state.values.flatMap(\.children)
        }
        await withTaskGroup(of: Void.self) { group in
            for child in children {
                group.addTask { _ = await child.stop() }
            }
        }
    }

    /// Replicas that exited by themselves (not stopped by the scaler), with their exit status, newest last.
    public var unexpectedExits: [(name: String, status: Int32)] { self.exits.withLock { $0 } }

    /// Reaps replicas that died and starts replacements.
    public func maintain() async {
        let died = self.state.withLock { state -> [(ChildProcess, Int32)] in
            var died: [(ChildProcess, Int32)] = []
            for key in state.keys {
                state[key]!.children.removeAll { child in
                    guard let status = child.pollExit() else { return false }
                    died.append((child, status))
                    return true
                }
            }
            return died
        }
        for (child, status) in died {
            self.exits.withLock { $0.append((child.name, status)) }
            self.firstUnexpectedExit.set((child.name, status))
            self.logger.error(
                "replica exited; starting another", metadata: ["name": "\(child.name)", "status": "\(status)"])
        }
        let asked = self.state.withLock { $0.values.compactMap(\.group) }
        let configured = Set(self.configuration.groups.map(\.name))
        for group in self.configuration.groups + asked.filter({ !configured.contains($0.name) }) {
            do { try await self.reconcile(group) } catch {
                self.logger.error("could not start a replica", metadata: ["group": "\(group)", "error": "\(error)"])
            }
        }
    }

    /// Starts or stops processes until the group runs its desired count.
    private func reconcile(_ group: ScalingGroup) async throws {
        let (toStart, surplus) = self.state.withLock { state -> (Int, [ChildProcess]) in
            var entry = state[group.name, default: GroupProcesses()]
            defer { state[group.name] = entry }
            let toStart = max(0, entry.desired - entry.children.count - entry.starting)
            entry.starting += toStart
            var surplus: [ChildProcess] = []
            while entry.children.count + entry.starting > entry.desired, !entry.children.isEmpty {
                surplus.append(entry.children.removeLast())
            }
            return (toStart, surplus)
        }
        for child in surplus {
            // Not awaited, as in `retire`: the child's exit ends the task.
            Task { _ = await child.stop(grace: .seconds(30)) }
        }
        for _ in 0..<toStart {
            let child: ChildProcess
            do {
                child = try await self.startReplica(of: group)
            } catch {
                self.state.withLock { $0[group.name]!.starting -= 1 }
                throw error
            }
            let unwanted = self.state.withLock { state -> Bool in
                state[group.name]!.starting -= 1
                // The desired count may have fallen while it started.
                guard state[group.name]!.children.count < state[group.name]!.desired else { return true }
                state[group.name]!.children.append(child)
                return false
            }
            if unwanted { Task { _ = await child.stop(grace: .seconds(30)) } }  // not awaited, as above
        }
    }

    private func startReplica(of group: ScalingGroup) async throws -> ChildProcess {
        let configuration = self.configuration
        let number = self.started.wrappingAdd(1, ordering: .relaxed).newValue
        return try await ChildProcess.start(
            name: "expert \(group) #\(number)", executable: configuration.executable,
            arguments: [
                "expert", "--model", configuration.modelPath, "--experts", group.selection, "--group", group.name,
                "--host", configuration.host, "--port", "0", "--threads", String(configuration.threads),
                "--parent-pid", String(getpid()), "--coordinator", configuration.coordinator.description,
            ]
                + (configuration.unixSocketDirectory.map { ["--unix-socket", "\($0)/expert-\(number).sock"] } ?? [])
                + configuration.extraArguments,
            environment: RoleEnvironment.current,
            onExit: { [events = self.exitEventsContinuation] _ in events.yield() })
    }
}

extension CoordinatorConfiguration.Scaler {
    /// `moemesh expert` processes, children of the coordinator: `replicas` of each per-expert-index group.
    public static func local(replicas: Int, threads: Int, executable: String, extraArguments: [String]) -> Self {
        .custom { context in
            LocalProcessScaler(
                configuration: .init(
                    executable: executable, modelPath: context.modelPath,
                    groups: ScalingGroup.perExpertIndex(layers: context.checkpoint.layers), initialReplicas: replicas,
                    coordinator: context.coordinator, host: context.host, threads: threads,
                    extraArguments: extraArguments),
                logger: context.logger)
        }
    }
}
