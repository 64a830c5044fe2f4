import ArgumentParser
import MoEModel
import MoEServing

#if canImport(Glibc)
    import Glibc
#endif

struct Certs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Write a development CA and certificates for a mesh: ca.pem, server.pem (every service), client.pem (tools), with their keys.",
        discussion:
            "Services: --tls-cert DIR/server.pem --tls-key DIR/server-key.pem --tls-ca DIR/ca.pem (mutual TLS between them). Tools: --tls-cert DIR/client.pem --tls-key DIR/client-key.pem --tls-ca DIR/ca.pem. For production, use your own CA (e.g. cert-manager)."
    )

    @Option(help: "Folder to write into (created if missing).")
    var out: String

    @Option(
        help:
            "Host names and IPv4 addresses the services are reached at, comma-separated (localhost and 127.0.0.1 are always in)."
    )
    var hosts: String = ""

    @Option(help: "Days the certificates are valid.")
    var days: Int = 365

    @Flag(help: "Replace files that exist.")
    var force = false

    func run() async throws {
        guard self.days > 0 else { throw ValidationError("--days: expected 1 or more, got \(self.days)") }
        let hosts = self.hosts.split(separator: ",").map { String($0).trimmingSpaces() }.filter { !$0.isEmpty }
        let written = try Self.write(to: self.out, hosts: hosts, days: self.days, force: self.force)
        print("wrote \(written.joined(separator: ", ")) into \(self.out)")
    }

    /// Writes a fresh set into `folder`; keys are readable by their owner only.
    static func write(to folder: String, hosts: [String], days: Int, force: Bool) throws -> [String] {
        try FileSystem.createDirectory(folder)
        let files = try DevelopmentCertificates.make(hosts: hosts, days: days)
        let names = files.pem.keys.sorted()
        if !force, let existing = names.first(where: { FileSystem.fileExists("\(folder)/\($0)") }) {
            throw CommandFailure("\(folder)/\(existing) exists: give --force to replace the set")
        }
        for name in names {
            let path = "\(folder)/\(name)"
            try FileSystem.writeFile(path, chunks: [Array(files.pem[name]!.utf8)])
            chmod(path, name.hasSuffix("-key.pem") ? 0o600 : 0o644)
        }
        return names
    }
}

extension String {
    fileprivate func trimmingSpaces() -> String {
        String(self.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
