import GRPCCore
import GRPCNIOTransportHTTP2
import ServiceLifecycle

/// Runs a gRPC server as a swift-service-lifecycle `Service`: serves until graceful shutdown, then stops
/// accepting calls and finishes the ones in flight.
public struct GRPCServerService: Service {
    public let server: GRPCServer<HTTP2ServerTransport.Posix>
    private let transport: HTTP2ServerTransport.Posix
    private let health: HealthService?
    private let onListening: @Sendable (ServiceEndpoint) -> Void

    /// - Parameters:
    ///   - health: served beside `services`; NOT_SERVING once shutdown begins.
    ///   - onListening: called once with the bound address (the real port when asked for port 0).
    public init(
        transport: HTTP2ServerTransport.Posix, services: [any RegistrableRPCService], health: HealthService? = nil,
        interceptors: [any ServerInterceptor] = [], onListening: @escaping @Sendable (ServiceEndpoint) -> Void = { _ in }
    ) {
        self.transport = transport
        self.server = GRPCServer(
            transport: transport, services: services + (health.map { [$0] } ?? []), interceptors: interceptors)
        self.health = health
        self.onListening = onListening
    }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await self.server.serve() }
                if let endpoint = ServiceEndpoint(listening: try await self.transport.listeningAddress) {
                    self.onListening(endpoint)
                }
            }
        } onGracefulShutdown: {
            self.health?.shutDown()
            self.server.beginGracefulShutdown()
        }
    }
}

/// Runs a gRPC client's connections as a `Service`; shuts them down gracefully with the group.
public struct GRPCClientService: Service {
    public let client: GRPCClient<HTTP2ClientTransport.Posix>

    public init(client: GRPCClient<HTTP2ClientTransport.Posix>) { self.client = client }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await self.client.runConnections()
        } onGracefulShutdown: {
            self.client.beginGracefulShutdown()
        }
    }
}
