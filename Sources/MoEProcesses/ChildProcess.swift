import MoECore
import Subprocess
import SystemPackage
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A child OS process run with swift-subprocess: its standard output read line by line (ready lines remembered by
/// role), its standard error shared with this process, its exit status kept once it exits.
public final class ChildProcess: Sendable {
    /// Why a child could not start.
    public struct SpawnError: Error, CustomStringConvertible {
        public let executable: String
        public let reason: String
        public var description: String { "could not start \(self.executable): \(self.reason)" }
    }

    public let pid: pid_t
    public let name: String
    /// Lines the child writes to standard output, without their newline; ends when the child closes it.
    public let outputLines: AsyncStream<String>
    /// The exit status once the child has exited: its code, or 128 + the signal that ended it (as shells report it).
    public let exited = SetOnce<Int32>()
    /// Ready lines (`ReadyLine`) seen so far, by role.
    private let readyLines = Mutex<(seen: [String: ServiceEndpoint], outputEnded: Bool)>(([:], false))
    private let outputChanges = StateChanges()

    private init(pid: pid_t, name: String, outputLines: AsyncStream<String>) {
        self.pid = pid
        self.name = name
        self.outputLines = outputLines
    }

    /// Starts `executable` with `arguments` (not including argv[0]) and `environment` (`NAME=value` entries; nil:
    /// this process's). `onExit` is called once, with the exit status, when the child has exited.
    public static func start(
        name: String, executable: String, arguments: [String], environment: [String]? = nil,
        onExit: @escaping @Sendable (Int32) -> Void = { _ in }
    ) async throws(SpawnError) -> ChildProcess {
        let started = SetOnce<Result<ChildProcess, SpawnError>>()
        let (lines, linesContinuation) = AsyncStream.makeStream(of: String.self)
        // A child process outlives the call that starts it: its task ends when the process has exited, and
        // `exited` (or `stop`) is how its owner joins it.
        Task {
            let ran: TerminationStatus
            do {
                ran = try await Subprocess.run(
                    .path(FilePath(executable)), arguments: Arguments(arguments),
                    environment: environment.map { .custom($0.map { Array($0.utf8) + [0] }) } ?? .inherit,  // C strings
                    input: .none, output: .sequence, error: .currentStandardError
                ) { execution in
                    let child = ChildProcess(pid: execution.processIdentifier.value, name: name, outputLines: lines)
                    started.set(.success(child))
                    do {
                        for try await line in execution.standardOutput.strings() {
                            child.noteReadyLine(line)
                            linesContinuation.yield(line)
                        }
                    } catch {
                        // The output ends with the child: a read cut short by its exit is the end of its output.
                    }
                    child.endOutput()
                    linesContinuation.finish()
                }.terminationStatus
            } catch {
                started.set(.failure(SpawnError(executable: executable, reason: "\(error)")))
                linesContinuation.finish()
                return
            }
            guard case .success(let child) = started.value else { return }
            let status: Int32 =
                switch ran {
                case .exited(let code): code
                case .signaled(let signal): 128 + signal
                }
            child.exited.set(status)
            onExit(status)
        }
        // `started` is always set by the task above, before or instead of running the child.
        switch await started.wait() {
        case .success(let child): return child
        case .failure(let error): throw error
        case nil: throw SpawnError(executable: executable, reason: "cancelled while starting")
        }
    }

    private func noteReadyLine(_ line: String) {
        guard let role = ReadyLine.role(of: line), let endpoint = ReadyLine.parse(line, role: role) else { return }
        self.readyLines.withLock { state in
            if state.seen[role] == nil { state.seen[role] = endpoint }
        }
        self.outputChanges.changed()
    }

    private func endOutput() {
        self.readyLines.withLock { $0.outputEnded = true }
        self.outputChanges.changed()
    }

    /// Sends `signal` (SIGTERM by default) to the child, unless it has exited.
    public func signal(_ signal: Int32 = SIGTERM) {
        guard self.exited.value == nil else { return }
        kill(self.pid, signal)
    }

    /// The exit status if the child has exited, nil while it runs.
    public func pollExit() -> Int32? { self.exited.value }

    /// Waits up to `timeout` for the child to exit; returns its status or nil if it still runs.
    public func waitForExit(timeout: Duration) async -> Int32? {
        await untilFirstEnds({ _ = await self.exited.wait() }, { try? await Task.sleep(for: timeout) })
        return self.exited.value
    }

    /// SIGTERM, then SIGKILL if the child has not exited within `grace`. Returns the exit status.
    @discardableResult
    public func stop(grace: Duration = .seconds(5)) async -> Int32 {
        if let status = self.exited.value { return status }
        self.signal(SIGTERM)
        if let status = await self.waitForExit(timeout: grace) { return status }
        self.signal(SIGKILL)
        return await self.waitForExit(timeout: .seconds(5)) ?? -1
    }

    /// Waits for the child's ready line of `role` (see `ReadyLine`), within `timeout`; a line printed before the
    /// call counts. Returns the endpoint it announced; nil if the child ended its output or the time ran out.
    public func waitForReadyLine(role: String, timeout: Duration) async -> ServiceEndpoint? {
        await untilFirstEnds(
            {
                _ = await self.outputChanges.wait {
                    self.readyLines.withLock { $0.seen[role] != nil || $0.outputEnded }
                }
            },
            { try? await Task.sleep(for: timeout) })
        return self.readyLines.withLock { $0.seen[role] }
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
