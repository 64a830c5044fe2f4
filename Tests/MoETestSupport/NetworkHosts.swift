#if canImport(Glibc)
    import Glibc
#endif
import MoEModel
import MoEProcesses
import MoEServing

/// Hosts on this machine for multi-host tests: a network namespace per host (`moemesh-test-NAME`), linked to the root
/// namespace (where the test runs) by a veth pair: `mmt-NAME` outside with 10.231.N.1, `mmt-NAME-in` inside with
/// 10.231.N.2. Cutting a host's link (`setLink(_:up: false)`) silences its connections without a reset, as a
/// partition does. Needs root and iproute2 (`available`).
public struct NetworkHosts: Sendable {
    public let names: [String]

    /// Whether this machine can build them: root, and `ip` installed.
    public static var available: Bool { getuid() == 0 && Self.ip != nil }

    private static var ip: String? {
        ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].first { FileSystem.fileExists($0) }
    }

    /// Builds the hosts, removing any left by an earlier run first.
    public init(_ names: [String]) async throws {
        self.names = names
        await self.remove()
        for (index, name) in names.enumerated() {
            let (outside, inside, namespace) = ("mmt-\(name)", "mmt-\(name)-in", "moemesh-test-\(name)")
            let subnet = "10.231.\(index + 1)"
            for command in [
                ["netns", "add", namespace], ["link", "add", outside, "type", "veth", "peer", "name", inside],
                ["link", "set", inside, "netns", namespace], ["addr", "add", "\(subnet).1/24", "dev", outside],
                ["link", "set", outside, "up"], ["-n", namespace, "addr", "add", "\(subnet).2/24", "dev", inside],
                ["-n", namespace, "link", "set", inside, "up"], ["-n", namespace, "link", "set", "lo", "up"],
            ] {
                try await Self.run(command)
            }
        }
    }

    /// The host's own address, inside its namespace.
    public func address(_ name: String) -> String { "10.231.\(self.names.firstIndex(of: name)! + 1).2" }

    /// The root namespace's address as the host sees it (where the coordinator and routers are reached).
    public func gateway(_ name: String) -> String { "10.231.\(self.names.firstIndex(of: name)! + 1).1" }

    /// Starts `arguments` (a `moemesh` command line, without the binary) on host `name`.
    public func start(on name: String, _ arguments: [String], label: String) async throws -> ChildProcess {
        try await ChildProcess.start(
            name: label, executable: Self.ip ?? "ip",
            arguments: ["netns", "exec", "moemesh-test-\(name)", MoemeshBinary.path] + arguments)
    }

    /// Cuts (`up: false`) or restores the host's link.
    public func setLink(_ name: String, up: Bool) async throws {
        try await Self.run(["link", "set", "mmt-\(name)", up ? "up" : "down"])
    }

    /// Removes the namespaces and links (the processes still inside them must be stopped first).
    public func remove() async {
        for name in self.names {
            if FileSystem.fileExists("/sys/class/net/mmt-\(name)") {
                try? await Self.run(["link", "del", "mmt-\(name)"])
            }
            if FileSystem.fileExists("/run/netns/moemesh-test-\(name)") {
                try? await Self.run(["netns", "del", "moemesh-test-\(name)"])
            }
        }
    }

    private static func run(_ arguments: [String]) async throws {
        let child = try await ChildProcess.start(name: "ip", executable: Self.ip ?? "ip", arguments: arguments)
        for await _ in child.outputLines {}
        let status = await child.waitForExit(timeout: .seconds(10))
        if status != 0 {
            throw NetworkHostsError(
                "ip \(arguments.joined(separator: " ")) exited with \(status.map(String.init) ?? "no status")")
        }
    }
}

public struct NetworkHostsError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
