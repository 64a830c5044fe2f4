import MoECore
import MoEProcesses
import MoEServing
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("child processes (swift-subprocess)", .timeLimit(.minutes(2)))
struct ChildProcessTests {
    @Test("the environment reaches the child exactly as given")
    func environment() async throws {
        let child = try await ChildProcess.start(
            name: "env", executable: "/usr/bin/env", arguments: [], environment: ["A=1", "LONGER_NAME=two words"])
        var lines: [String] = []
        for await line in child.outputLines { lines.append(line) }
        #expect(lines == ["A=1", "LONGER_NAME=two words"])
        #expect(await child.waitForExit(timeout: .seconds(30)) == 0)
    }

    @Test("exit codes and signals as shells report them; a ready line printed before anyone waits is remembered")
    func exitsAndReadyLines() async throws {
        let exits = try await ChildProcess.start(
            name: "exit 3", executable: "/bin/sh",
            arguments: ["-c", "echo 'http listening on 127.0.0.1:81'; echo 'router listening on 127.0.0.1:82'; exit 3"])
        // Both lines are read before the second wait starts: the first wait must not have consumed the other.
        #expect(await exits.waitForReadyLine(role: "router", timeout: .seconds(30)) == ServiceEndpoint("127.0.0.1:82"))
        #expect(await exits.waitForReadyLine(role: "http", timeout: .seconds(30)) == ServiceEndpoint("127.0.0.1:81"))
        #expect(await exits.waitForExit(timeout: .seconds(30)) == 3)
        #expect(await exits.waitForReadyLine(role: "coordinator", timeout: .seconds(30)) == nil)

        let sleeper = try await ChildProcess.start(name: "sleep", executable: "/bin/sleep", arguments: ["60"])
        #expect(await sleeper.stop(grace: .seconds(10)) == 128 + SIGTERM)
        await #expect(throws: ChildProcess.SpawnError.self) {
            _ = try await ChildProcess.start(name: "missing", executable: "/nonexistent/binary", arguments: [])
        }
    }
}
