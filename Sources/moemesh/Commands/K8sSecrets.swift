import ArgumentParser
import MoECore
import MoEModel

#if canImport(Glibc)
    import Glibc
#endif

/// `moemesh k8s secrets`: the files a secure overlay's secretGenerator reads.
struct K8sSecrets: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secrets",
        abstract:
            "Write the TLS and token files a rendered overlay makes its Secrets from (moemesh-tls, moemesh-tokens).",
        discussion: """
            Into --out (an overlay's secrets/ folder; `k8s render` makes it when missing): tls.crt, tls.key and \
            ca.crt (one server certificate for every service, named moemesh.mesh, moemesh-router and \
            moemesh-coordinator besides --hosts, from a new development CA whose key is not kept); tokens files per \
            role that each pod sees only its own of (tokens-coordinator: client, admin and mesh; tokens-router: client \
            and mesh; tokens-expert: mesh) and mesh-token (the services' own). For you: client.crt and client.key \
            (tools such as moemesh forward --tls-cert), client-token and admin-token. Keys and tokens are readable by \
            their owner only; keep the folder out of version control. For production, issue certificates from your \
            own CA (cert-manager's Secret layout is the same: tls.crt, tls.key, ca.crt).
            """)

    @Option(help: "Folder to write into (created if missing).") var out: String
    @Option(help: "More host names and IPv4 addresses in the server certificate, comma-separated.") var hosts: String =
        ""
    @Option(help: "Days the certificates are valid.") var days: Int = 365
    @Flag(help: "Replace files that exist.") var force = false

    /// The names every server certificate carries in a cluster: the mesh-wide name replicas are checked by
    /// (MOEMESH_TLS_SERVER_NAME) and the Services'.
    static let clusterNames = ["moemesh.mesh", "moemesh-router", "moemesh-coordinator"]

    func run() async throws {
        guard self.days > 0 else { throw ValidationError("--days: expected 1 or more, got \(self.days)") }
        let extra = self.hosts.split(separator: ",").map { String($0).filter { $0 != " " } }.filter { !$0.isEmpty }
        let written = try Self.write(to: self.out, hosts: Self.clusterNames + extra, days: self.days, force: self.force)
        print("wrote \(written.joined(separator: ", ")) into \(self.out)")
    }

    /// Writes a fresh set into `folder`.
    static func write(to folder: String, hosts: [String], days: Int, force: Bool) throws -> [String] {
        try FileSystem.createDirectory(folder)
        let certificates = try DevelopmentCertificates.make(hosts: hosts, days: days)
        let token = { (0..<16).map { _ in String(UInt8.random(in: 0...255), radix: 16).leftPadded(to: 2) }.joined() }
        let (client, admin, mesh) = (token(), token(), token())
        let files: [(name: String, contents: String, secret: Bool)] = [
            ("ca.crt", certificates.pem["ca.pem"]!, false),
            ("tls.crt", certificates.pem["server.pem"]!, false),
            ("tls.key", certificates.pem["server-key.pem"]!, true),
            ("client.crt", certificates.pem["client.pem"]!, false),
            ("client.key", certificates.pem["client-key.pem"]!, true),
            ("tokens-coordinator", "client \(client)\nadmin \(admin)\nmesh \(mesh)\n", true),
            ("tokens-router", "client \(client)\nmesh \(mesh)\n", true),
            ("tokens-expert", "mesh \(mesh)\n", true),
            ("mesh-token", mesh + "\n", true),
            ("client-token", client + "\n", true),
            ("admin-token", admin + "\n", true),
            (".gitignore", "# Keys and tokens: never commit them.\n*\n", false),
        ]
        if !force, let existing = files.first(where: { FileSystem.fileExists("\(folder)/\($0.name)") }) {
            throw CommandFailure("\(folder)/\(existing.name) exists: give --force to replace the set")
        }
        for file in files {
            let path = "\(folder)/\(file.name)"
            try FileSystem.writeFile(path, chunks: [Array(file.contents.utf8)])
            chmod(path, file.secret ? 0o600 : 0o644)
        }
        return files.map(\.name).filter { $0 != ".gitignore" }
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - self.count)) + self
    }
}
