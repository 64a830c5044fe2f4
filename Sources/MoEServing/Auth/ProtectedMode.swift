import GRPCCore

/// Protected mode: a service that listens beyond loopback with neither TLS nor tokens cannot tell a member of its
/// mesh from a stranger on the network, so it takes the calls that change it (`methods`: registrations, admin
/// actions) only from its own host, and refuses them from any other host PERMISSION_DENIED, saying why and what to
/// do. `--insecure` turns it off, for a network the operator trusts.
public struct ProtectedModeInterceptor: ServerInterceptor {
    public let methods: Set<MethodDescriptor>
    /// The flag that turns protected mode off, named in refusals.
    public let insecureFlag: String

    public init(methods: Set<MethodDescriptor>, insecureFlag: String = "--insecure") {
        self.methods = methods
        self.insecureFlag = insecureFlag
    }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>, context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        guard self.methods.contains(context.descriptor), !Self.isLoopback(peer: context.remotePeer) else {
            return try await next(request, context)
        }
        throw RPCError(
            code: .permissionDenied,
            message: "protected mode: this service listens beyond loopback with neither TLS nor tokens, so it takes "
                + "\(context.descriptor.method) only from its own host, not from \(context.remotePeer); give the mesh "
                + "tokens (--auth-tokens) or TLS (--tls-cert, --tls-key, --tls-ca), or start it with "
                + "\(self.insecureFlag) on a network you trust")
    }

    /// Whether a gRPC peer (`ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000`, `unix:/path`) is this host's loopback.
    public static func isLoopback(peer: String) -> Bool {
        if peer.hasPrefix("unix:") { return true }
        if peer.hasPrefix("ipv4:127.") { return true }
        return peer.hasPrefix("ipv6:[::1]") || peer.hasPrefix("ipv6:[::ffff:127.")
    }
}

extension ServingConfiguration {
    /// Whether `host` names only this machine's loopback.
    public var listensOnLoopbackOnly: Bool { ["127.0.0.1", "localhost", "::1"].contains(self.host) }

    /// Listening beyond loopback with neither TLS nor tokens: anyone who reaches the port is taken for a member.
    public var isOpenBeyondLoopback: Bool {
        self.tls == nil && self.acceptedTokens == nil && !self.listensOnLoopbackOnly
    }

    /// Protected mode applies: open beyond loopback, and not `insecure`.
    public var isProtected: Bool { !self.insecure && self.isOpenBeyondLoopback }
}
