import CGRPCBridge

/// TLS for the data plane's servers and channels, as PEM text (read from the `--tls-*` files).
///
/// A server presents `certificateChain`/`privateKey`; with `rootCertificates` it verifies client certificates, and
/// `clientAuth` says whether it requires one (mutual TLS, between mesh services) or takes server-only TLS clients
/// (end users who bring a bearer token). A channel verifies servers with `rootCertificates`, presents its own
/// certificate when it has one, and checks `serverName` instead of the host it dials when given.
public struct DataPlaneTLS: Sendable, Equatable {
    public enum ClientAuth: String, Sendable, CaseIterable {
        /// No client certificate is asked for.
        case none
        /// A client certificate is verified when one is sent.
        case optional
        /// Mutual TLS: a client without a certificate the CA signed is refused.
        case require

        var bridgeValue: mm_client_auth {
            switch self {
            case .none: MM_CLIENT_AUTH_NONE
            case .optional: MM_CLIENT_AUTH_OPTIONAL
            case .require: MM_CLIENT_AUTH_REQUIRE
            }
        }
    }

    public var certificateChain: String?
    public var privateKey: String?
    public var rootCertificates: String?
    public var clientAuth: ClientAuth
    public var serverName: String?

    public init(
        certificateChain: String? = nil, privateKey: String? = nil, rootCertificates: String? = nil,
        clientAuth: ClientAuth = .require, serverName: String? = nil
    ) {
        self.certificateChain = certificateChain
        self.privateKey = privateKey
        self.rootCertificates = rootCertificates
        self.clientAuth = rootCertificates == nil ? .none : clientAuth
        self.serverName = serverName
    }

    /// Runs `body` with the bridge's view of these settings (C strings valid during `body`).
    func withBridgeValue<Result>(_ body: (UnsafePointer<mm_tls>) throws -> Result) rethrows -> Result {
        try withOptionalCString(self.certificateChain) { chain in
            try withOptionalCString(self.privateKey) { key in
                try withOptionalCString(self.rootCertificates) { roots in
                    try withOptionalCString(self.serverName) { name in
                        var tls = mm_tls(
                            certificate_chain: chain, private_key: key, root_certificates: roots,
                            client_auth: self.clientAuth.bridgeValue, server_name_override: name)
                        return try body(&tls)
                    }
                }
            }
        }
    }
}

/// `body` with `text` as a C string, or with NULL.
func withOptionalCString<Result>(
    _ text: String?, _ body: (UnsafePointer<CChar>?) throws -> Result
) rethrows -> Result {
    guard let text else { return try body(nil) }
    return try text.withCString { try body($0) }
}

/// `body` with the bridge's TLS settings, or with NULL for plaintext.
func withOptionalTLS<Result>(
    _ tls: DataPlaneTLS?, _ body: (UnsafePointer<mm_tls>?) throws -> Result
) rethrows -> Result {
    guard let tls else { return try body(nil) }
    return try tls.withBridgeValue { try body($0) }
}
