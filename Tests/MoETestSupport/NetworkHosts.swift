#if canImport(Glibc)
    import Glibc
#endif
import MoEModel
import MoEProcesses
import MoEServing

/// Hosts on this machine for multi-host tests: a network namespace per host (`moemesh-test-NAME`) on one LAN — a
/// bridge `mmt-br` in the root namespace (where the test runs; 10.231.0.1), each host linked to it by a veth pair
/// (`mmt-NAME` on the bridge, `mmt-NAME-in` inside with 10.231.0.N, N from 2). Hosts reach each other and the root
/// namespace directly. Faults: cutting a host's link (`setLink(_:up: false)`) silences all its connections without a
/// reset, as a partition does; `setPath(from:to:open: false)` drops only what one host sends another (a blackhole
/// route), so that a router can lose one expert host while both still reach the coordinator. Needs root and iproute2
/// (`available`).
public struct NetworkHosts: Sendable {
    public let names: [String]
    static let bridge = "mmt-br"

    /// Whether this machine can build them: root, and `ip` installed.
    public static var available: Bool { getuid() == 0 && Self.ip != nil }

    private static var ip: String? {
        ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].first { FileSystem.fileExists($0) }
    }

    /// Builds the hosts, removing any left by an earlier run first.
    public init(_ names: [String]) async throws {
        self.names = names
        await self.remove()
        for command in [
            ["link", "add", Self.bridge, "type", "bridge"], ["addr", "add", "10.231.0.1/24", "dev", Self.bridge],
            ["link", "set", Self.bridge, "up"],
        ] {
            try await Self.run(command)
        }
        for name in names {
            let (outside, inside, namespace) = ("mmt-\(name)", "mmt-\(name)-in", "moemesh-test-\(name)")
            for command in [
                ["netns", "add", namespace], ["link", "add", outside, "type", "veth", "peer", "name", inside],
                ["link", "set", inside, "netns", namespace], ["link", "set", outside, "master", Self.bridge],
                ["link", "set", outside, "up"],
                ["-n", namespace, "addr", "add", "\(self.address(name))/24", "dev", inside],
                ["-n", namespace, "link", "set", inside, "up"], ["-n", namespace, "link", "set", "lo", "up"],
            ] {
                try await Self.run(command)
            }
        }
    }

    /// The host's own address, inside its namespace.
    public func address(_ name: String) -> String { "10.231.0.\(self.names.firstIndex(of: name)! + 2)" }

    /// The root namespace's address on the hosts' LAN (where a coordinator or router in the test's namespace is
    /// reached).
    public func gateway(_ name: String) -> String { "10.231.0.1" }

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

    /// Drops (`open: false`) or lets through again what host `from` sends to host `to`: a blackhole route on `from`.
    /// `to`'s packets still arrive, but nothing is answered or acknowledged, so connections between the two stall as
    /// in a partition; every other path stays up.
    public func setPath(from: String, to: String, open: Bool) async throws {
        try await Self.run(
            ["-n", "moemesh-test-\(from)", "route", open ? "del" : "add", "blackhole", "\(self.address(to))/32"])
    }

    /// Removes the namespaces, links and the bridge (the processes still inside them must be stopped first).
    public func remove() async {
        for name in self.names {
            if FileSystem.fileExists("/sys/class/net/mmt-\(name)") {
                try? await Self.run(["link", "del", "mmt-\(name)"])
            }
            if FileSystem.fileExists("/run/netns/moemesh-test-\(name)") {
                try? await Self.run(["netns", "del", "moemesh-test-\(name)"])
            }
        }
        if FileSystem.fileExists("/sys/class/net/\(Self.bridge)") { try? await Self.run(["link", "del", Self.bridge]) }
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
