#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A child OS process started with `posix_spawn`, its standard output read line by line, its standard error
/// shared with this process.
public final class ChildProcess: Sendable {
    public enum SpawnError: Error, CustomStringConvertible {
        case spawn(executable: String, errno: Int32)
        case pipe(errno: Int32)

        public var description: String {
            switch self {
            case .spawn(let executable, let code):
                "could not start \(executable): \(String(cString: strerror(code)))"
            case .pipe(let code): "could not create a pipe: \(String(cString: strerror(code)))"
            }
        }
    }

    public let pid: pid_t
    public let name: String
    /// Lines the child writes to standard output, without their newline; ends when the child closes it.
    public let outputLines: AsyncStream<String>
    /// Set when the child has exited (it is not reaped by this: `pollExit` reads and reaps its status).
    public let exited = SetOnce<Void>()

    /// Starts `executable` with `arguments` (not including argv[0]) and `environment` (`NAME=value` entries; nil:
    /// this process's). `onExit` is called once, on a thread of its own, when the child exits.
    public init(
        name: String, executable: String, arguments: [String], environment: [String]? = nil,
        onExit: @escaping @Sendable () -> Void = {}
    ) throws(SpawnError) {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw .pipe(errno: errno) }
        let (readEnd, writeEnd) = (fds[0], fds[1])
        _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, writeEnd, STDOUT_FILENO)
        posix_spawn_file_actions_addclose(&actions, writeEnd)

        let argv = ([executable] + arguments).map { strdup($0) }
        defer { argv.forEach { free($0) } }
        var cArguments = argv + [nil]
        var pid: pid_t = 0
        let environmentCopies = environment?.map { strdup($0) }
        defer { environmentCopies?.forEach { free($0) } }
        let result: Int32
        if let environmentCopies {
            var cEnvironment = environmentCopies + [nil]
            result = posix_spawn(&pid, executable, &actions, nil, &cArguments, &cEnvironment)
        } else {
            result = posix_spawn(&pid, executable, &actions, nil, &cArguments, environ)
        }
        close(writeEnd)
        guard result == 0 else {
            close(readEnd)
            throw .spawn(executable: executable, errno: result)
        }
        self.pid = pid
        self.name = name
        let (stream, continuation) = AsyncStream.makeStream(of: String.self)
        self.outputLines = stream
        // Blocking reads get a thread of their own: never the cooperative pool, nor Dispatch's global queue,
        // whose pool grows slowly on small machines when its threads block (seen here: ready lines seconds late).
        Self.detachThread { Self.readLines(from: readEnd, into: continuation) }
        // Exits are waited for, not polled: a thread blocks in waitid(WNOWAIT), which leaves the child to be reaped
        // by `pollExit`.
        let exited = self.exited
        Self.detachThread { [pid] in
            var info = siginfo_t()
            while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
            exited.set()
            onExit()
        }
    }

    /// Runs `body` on a new detached POSIX thread.
    private static func detachThread(_ body: @escaping @Sendable () -> Void) {
        final class Box: @unchecked Sendable {
            let body: @Sendable () -> Void
            init(_ body: @escaping @Sendable () -> Void) { self.body = body }
        }
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(
            &thread, nil,
            { context in
                let box = Unmanaged<Box>.fromOpaque(context!).takeRetainedValue()
                box.body()
                return nil
            }, context)
        if result == 0 {
            pthread_detach(thread)
        } else {
            Unmanaged<Box>.fromOpaque(context).takeRetainedValue().body()
        }
    }

    private static func readLines(from descriptor: Int32, into continuation: AsyncStream<String>.Continuation) {
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            pending.append(contentsOf: buffer[0..<count])
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                continuation.yield(String(decoding: pending[..<newline], as: UTF8.self))
                pending.removeSubrange(...newline)
            }
        }
        if !pending.isEmpty { continuation.yield(String(decoding: pending, as: UTF8.self)) }
        close(descriptor)
        continuation.finish()
    }

    /// Sends `signal` (SIGTERM by default) to the child.
    public func signal(_ signal: Int32 = SIGTERM) {
        kill(self.pid, signal)
    }

    /// The exit status if the child has exited (reaping it), nil while it runs.
    public func pollExit() -> Int32? {
        var status: Int32 = 0
        let result = waitpid(self.pid, &status, WNOHANG)
        guard result == self.pid else { return result < 0 ? -1 : nil }
        // WIFEXITED / WEXITSTATUS, and 128 + signal for a signalled child, as shells report it.
        return (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
    }

    /// Waits up to `timeout` for the child to exit; returns its status or nil if it still runs.
    public func waitForExit(timeout: Duration) async -> Int32? {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { _ = await self.exited.wait() }
            group.addTask { try? await Task.sleep(for: timeout) }  // the time limit
            await group.next()
            group.cancelAll()
        }
        return self.pollExit()
    }

    /// SIGTERM, then SIGKILL if the child has not exited within `grace`. Returns the exit status.
    @discardableResult
    public func stop(grace: Duration = .seconds(5)) async -> Int32 {
        if let status = self.pollExit() { return status }
        self.signal(SIGTERM)
        if let status = await self.waitForExit(timeout: grace) { return status }
        self.signal(SIGKILL)
        return await self.waitForExit(timeout: .seconds(5)) ?? -1
    }

    /// Waits for the child's ready line of `role` (see `ReadyLine`), within `timeout`.
    /// Returns the endpoint it announced; nil if the child ended its output or the time ran out.
    public func waitForReadyLine(role: String, timeout: Duration) async -> ServiceEndpoint? {
        let lines = self.outputLines
        return await withTaskGroup(of: ServiceEndpoint?.self) { group in
            group.addTask {
                for await line in lines {
                    if let endpoint = ReadyLine.parse(line, role: role) { return endpoint }
                }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: timeout)  // the time limit
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    /// This process's environment without the `MOEMESH_*` option variables (`MOEMESH_CACHE` and `MOEMESH_CONFIG`
    /// stay): for role processes a mesh starts with explicit flags, which must not pick up options meant for it.
    public static var roleEnvironment: [String] {
        Self.environment.filter {
            !$0.hasPrefix("MOEMESH_") || $0.hasPrefix("MOEMESH_CACHE=") || $0.hasPrefix("MOEMESH_CONFIG=")
        }
    }

    /// This process's environment, `NAME=value` entries.
    public static var environment: [String] {
        var entries: [String] = []
        var entry = environ
        while let pointer = entry.pointee {
            entries.append(String(cString: pointer))
            entry += 1
        }
        return entries
    }

    /// The path of the running executable (`/proc/self/exe` on Linux).
    public static var currentExecutable: String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return CommandLine.arguments[0] }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
