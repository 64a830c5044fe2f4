import MoECore
import GRPCCore
import GRPCNIOTransportHTTP2
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Runs a gRPC server as a swift-service-lifecycle `Service`: serves until graceful shutdown, then stops
/// accepting calls and finishes the ones in flight. The same services can also be served on more transports
/// (an expert's Unix domain socket beside its TCP port).
public struct GRPCServerService: Service {
    /// One server per transport, the main transport's first.
    public let servers: [GRPCServer<HTTP2ServerTransport.Posix>]
    private let transports: [HTTP2ServerTransport.Posix]
    private let health: HealthService?
    private let onListening: @Sendable (ServiceEndpoint) -> Void

    /// - Parameters:
    ///   - alsoOn: more transports serving the same services.
    ///   - health: served beside `services`; NOT_SERVING once shutdown begins.
    ///   - onListening: called once with `transport`'s bound address (the real port when asked for port 0), when
    ///     every transport listens.
    public init(
        transport: HTTP2ServerTransport.Posix, alsoOn more: [HTTP2ServerTransport.Posix] = [],
        services: [any RegistrableRPCService], health: HealthService? = nil,
        interceptors: [any ServerInterceptor] = [],
        onListening: @escaping @Sendable (ServiceEndpoint) -> Void = { _ in }
    ) {
        self.transports = [transport] + more
        self.servers = self.transports.map {
            GRPCServer(transport: $0, services: services + (health.map { [$0] } ?? []), interceptors: interceptors)
        }
        self.health = health
        self.onListening = onListening
    }

    public func run() async throws {
        let socketFiles = Mutex<[String]>([])
        // A Unix domain socket's file outlives its listener: removed once served.
        defer { for path in socketFiles.withLock({ $0 }) { unlink(path) } }
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                for server in self.servers { group.addTask { try await server.serve() } }
                for transport in self.transports.dropFirst() {
                    if let path = try await transport.listeningAddress.unixDomainSocket?.path {
                        socketFiles.withLock { $0.append(path) }
                    }
                }
                if let endpoint = ServiceEndpoint(listening: try await self.transports[0].listeningAddress) {
                    self.onListening(endpoint)
                }
            }
        } onGracefulShutdown: {
            self.health?.shutDown()
            for server in self.servers { server.beginGracefulShutdown() }
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
