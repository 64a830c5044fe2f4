import GRPCCore

/// Which roles may call which method, for the whole mesh in one table: a rule names a service
/// (`moemesh.v1.Router`) or one method (`moemesh.v1.Coordinator/DrainReplica`), the method's rule first. Health
/// checks are open; a method no rule names is refused.
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
        open: ["grpc.health.v1.Health"])

    /// Whether the call is open to anyone.
    public func isOpen(_ method: MethodDescriptor) -> Bool { self.open.contains(method.service.fullyQualifiedService) }

    /// The roles that may call `method` (empty: none).
    public func roles(for method: MethodDescriptor) -> Set<AuthRole> {
        self.rules[method.fullyQualifiedMethod] ?? self.rules[method.service.fullyQualifiedService] ?? []
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
        guard !self.policy.isOpen(method) else { return }
        let values = Array(metadata[stringValues: "authorization"])
        guard let value = values.first else {
            throw RPCError(
                code: .unauthenticated,
                message: "\(method.fullyQualifiedMethod): expected metadata 'authorization: Bearer TOKEN', got none")
        }
        guard values.count == 1, value.hasPrefix("Bearer "), value.count > "Bearer ".count else {
            throw RPCError(
                code: .unauthenticated,
                message:
                    "\(method.fullyQualifiedMethod): expected one 'authorization: Bearer TOKEN', got \(values.count) "
                    + "value(s) of another form")
        }
        guard let role = self.tokens.role(of: String(value.dropFirst("Bearer ".count))) else {
            throw RPCError(
                code: .unauthenticated,
                message: "\(method.fullyQualifiedMethod): the bearer token is not one this service accepts")
        }
        let allowed = self.policy.roles(for: method)
        guard allowed.contains(role) else {
            let needed = AuthRole.allCases.filter(allowed.contains).map(\.rawValue).joined(separator: " or ")
            throw RPCError(
                code: .permissionDenied,
                message:
                    "\(method.fullyQualifiedMethod): needs role \(needed.isEmpty ? "(none may call it)" : needed); "
                    + "this token's role is \(role.rawValue)")
        }
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
