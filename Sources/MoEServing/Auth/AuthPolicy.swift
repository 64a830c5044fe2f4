import GRPCCore

/// Which roles may call which method, for the whole mesh in one table: a rule names a service
/// (`moemesh.v1.Router`) or one method (`moemesh.v1.Coordinator/DrainReplica`), the method's rule first. Health
/// checks and server reflection are open; a method no rule names is refused.
public struct AuthPolicy: Sendable {
    public let rules: [String: Set<AuthRole>]
    public let open: Set<String>

    public init(rules: [String: Set<AuthRole>], open: Set<String>) {
        self.rules = rules
        self.open = open
    }

    public static let mesh = AuthPolicy(
        rules: [
            "moemesh.v1.Router": [.client, .admin],
            "moemesh.v1.Expert": [.mesh],
            "moemesh.v1.Coordinator": [.mesh],
            "moemesh.v1.Coordinator/GetStatus": [.client, .admin, .mesh],
            "moemesh.v1.Coordinator/SetPruned": [.admin],
            "moemesh.v1.Coordinator/DrainReplica": [.admin],
            "moemesh.v1.Coordinator/ApplyPlan": [.admin],
        ],
        // Health checks, and reflection: it describes the API (the protos are public); every call still needs its
        // token.
        open: Set(["grpc.health.v1.Health"] + ServerReflection.reflectionServices))

    /// Whether calls of `service` (`moemesh.v1.Router`) are open to anyone.
    public func isOpen(service: some StringProtocol) -> Bool { self.open.contains(String(service)) }

    /// The roles that may call `method` (`moemesh.v1.Coordinator/DrainReplica`) of `service` (empty: none).
    public func roles(service: some StringProtocol, method: some StringProtocol) -> Set<AuthRole> {
        self.rules[String(method)] ?? self.rules[String(service)] ?? []
    }

    /// Checks a call's `authorization: Bearer TOKEN` against `tokens`: no token, or one the service does not know →
    /// `UNAUTHENTICATED`; a known token whose role may not call the method → `PERMISSION_DENIED`. `method` is
    /// `package.Service/Method`, as every message names it.
    public func check(_ metadata: Metadata, method: String, tokens: AuthTokens) throws(RPCError) {
        let service = method.prefix { $0 != "/" }
        guard !self.isOpen(service: service) else { return }
        let values = Array(metadata[stringValues: "authorization"])
        guard let value = values.first else {
            throw RPCError(
                code: .unauthenticated, message: "\(method): expected metadata 'authorization: Bearer TOKEN', got none")
        }
        guard values.count == 1, value.hasPrefix("Bearer "), value.count > "Bearer ".count else {
            throw RPCError(
                code: .unauthenticated,
                message:
                    "\(method): expected one 'authorization: Bearer TOKEN', got \(values.count) value(s) of another form"
            )
        }
        guard let role = tokens.role(of: String(value.dropFirst("Bearer ".count))) else {
            throw RPCError(
                code: .unauthenticated, message: "\(method): the bearer token is not one this service accepts")
        }
        let allowed = self.roles(service: service, method: method)
        guard allowed.contains(role) else {
            let needed = AuthRole.allCases.filter(allowed.contains).map(\.rawValue).joined(separator: " or ")
            throw RPCError(
                code: .permissionDenied,
                message:
                    "\(method): needs role \(needed.isEmpty ? "(none may call it)" : needed); "
                    + "this token's role is \(role.rawValue)")
        }
    }
}

/// Checks each call's `authorization: Bearer TOKEN` against `tokens` and `policy`: no token, or one the service does
/// not know → `UNAUTHENTICATED`; a known token whose role may not call the method → `PERMISSION_DENIED`.
public struct AuthServerInterceptor: ServerInterceptor {
    public let tokens: AuthTokens
    public let policy: AuthPolicy

    public init(tokens: AuthTokens, policy: AuthPolicy = .mesh) {
        self.tokens = tokens
        self.policy = policy
    }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>, context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        try self.check(request.metadata, method: context.descriptor)
        return try await next(request, context)
    }

    func check(_ metadata: Metadata, method: MethodDescriptor) throws(RPCError) {
        try self.policy.check(metadata, method: method.fullyQualifiedMethod, tokens: self.tokens)
    }
}

/// Sends `authorization: Bearer TOKEN` with every call of a client.
public struct BearerTokenClientInterceptor: ClientInterceptor {
    private let value: String

    public init(token: String) { self.value = "Bearer \(token)" }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingClientRequest<Input>, context: ClientContext,
        next: (StreamingClientRequest<Input>, ClientContext) async throws -> StreamingClientResponse<Output>
    ) async throws -> StreamingClientResponse<Output> {
        var request = request
        request.metadata.replaceOrAddString(self.value, forKey: "authorization")
        return try await next(request, context)
    }
}
