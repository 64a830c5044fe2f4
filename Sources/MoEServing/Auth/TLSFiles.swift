import GRPCNIOTransportHTTP2
import MoEDataPlane
import NIOSSL

/// TLS from PEM files (`--tls-cert`, `--tls-key`, `--tls-ca`). A server presents `certificate` and, with a `ca`,
/// requires client certificates that CA signed (mutual TLS between the mesh's services). A client verifies servers
/// against `ca` (their certificate must name the host it dials, or `serverName` when given) and presents
/// `certificate` when it has one.
public struct TLSFiles: Sendable, Equatable {
    public var certificate: String?
    public var privateKey: String?
    public var ca: String?
    /// The name servers' certificates must carry (and the SNI sent), instead of the host dialled: replicas that
    /// register their pod IP share one mesh-wide name (`--tls-server-name`).
    public var serverName: String?
    /// Whether a data-plane server (router, expert) with a CA requires client certificates (`require`, mutual TLS:
    /// the default, between mesh services) or verifies one only when sent (`optional`: end users who bring a bearer
    /// token instead; `--tls-client-auth`). The coordinator always requires them.
    public var clientAuth: DataPlaneTLS.ClientAuth = .require

    public init(
        certificate: String? = nil, privateKey: String? = nil, ca: String? = nil, serverName: String? = nil,
        clientAuth: DataPlaneTLS.ClientAuth = .require
    ) {
        self.certificate = certificate
        self.privateKey = privateKey
        self.ca = ca
        self.serverName = serverName
        self.clientAuth = clientAuth
    }

    /// The files of a folder `moemesh certs` wrote: `ca.pem`, and `server.pem`/`server-key.pem` or
    /// `client.pem`/`client-key.pem`.
    public static func folder(_ path: String, role: String) -> TLSFiles {
        TLSFiles(certificate: "\(path)/\(role).pem", privateKey: "\(path)/\(role)-key.pem", ca: "\(path)/ca.pem")
    }

    /// What a server needs: a certificate and its key.
    public func validateForServer() throws(TLSError) {
        guard self.certificate != nil, self.privateKey != nil else {
            throw TLSError(
                "a TLS server needs --tls-cert and --tls-key (and --tls-ca to require client certificates), got "
                    + self.given)
        }
    }

    /// What a client needs: the CA that signed the servers' certificates; a certificate only with its key.
    public func validateForClient() throws(TLSError) {
        guard self.ca != nil else {
            throw TLSError("a TLS client needs --tls-ca (the CA of the servers' certificates), got " + self.given)
        }
        guard (self.certificate == nil) == (self.privateKey == nil) else {
            throw TLSError("--tls-cert and --tls-key go together, got " + self.given)
        }
    }

    private var given: String {
        let names = [("--tls-cert", self.certificate), ("--tls-key", self.privateKey), ("--tls-ca", self.ca)]
            .compactMap { $0.1 == nil ? nil : $0.0 }
        return names.isEmpty ? "none" : names.joined(separator: ", ")
    }

    var serverSecurity: HTTP2ServerTransport.Posix.TransportSecurity {
        let chain = self.certificate.map { [TLSConfig.CertificateSource.file(path: $0, format: .pem)] } ?? []
        let key = TLSConfig.PrivateKeySource.file(path: self.privateKey ?? "", format: .pem)
        guard let ca = self.ca else { return .tls(certificateChain: chain, privateKey: key) }
        return .mTLS(certificateChain: chain, privateKey: key) { config in
            config.trustRoots = .certificates([.file(path: ca, format: .pem)])
        }
    }

    var clientSecurity: HTTP2ClientTransport.Posix.TransportSecurity {
        .tls { config in
            config.certificateChain = self.certificate.map { [.file(path: $0, format: .pem)] } ?? []
            config.privateKey = self.privateKey.map { .file(path: $0, format: .pem) }
            if let ca = self.ca { config.trustRoots = .certificates([.file(path: ca, format: .pem)]) }
        }
    }
}

extension TLSFiles {
    /// The HTTPS endpoint's context: this service's certificate and key; with a CA, client certificates it signed
    /// are required (hostnames of clients are not checked, as in the gRPC server's mTLS).
    func httpServerContext() throws -> NIOSSLContext {
        try self.validateForServer()
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(self.certificate!).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: self.privateKey!, format: .pem)))
        if let ca = self.ca {
            configuration.trustRoots = .file(ca)
            configuration.certificateVerification = .noHostnameVerification
        }
        return try NIOSSLContext(configuration: configuration)
    }
}

/// Why TLS options were refused.
public struct TLSError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
