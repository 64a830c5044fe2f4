import Logging
import MoEDataPlane
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

/// Runs a data-plane server as a swift-service-lifecycle `Service`: its async calls until shutdown; on graceful
/// shutdown, health NOT_SERVING, then the server stops taking calls, gives those in flight `drainTimeout` and
/// finishes the rest UNAVAILABLE ("the service is shutting down").
public struct DataPlaneServerService: Service {
    public let server: DataPlaneServer
    private let health: HealthService?
    private let drainTimeout: Duration
    private let socketFile: String?

    /// - Parameter removingOnExit: a Unix socket's file the server listens on, removed once it stops.
    public init(
        server: DataPlaneServer, health: HealthService? = nil, drainTimeout: Duration = .seconds(10),
        removingOnExit socketFile: String? = nil
    ) {
        self.server = server
        self.health = health
        self.drainTimeout = drainTimeout
        self.socketFile = socketFile
    }

    public func run() async throws {
        defer { if let path = self.socketFile { unlink(path) } }
        await withGracefulShutdownHandler {
            await self.server.run()
        } onGracefulShutdown: {
            self.health?.shutDown()
            self.server.beginShutdown(grace: self.drainTimeout)
        }
    }
}
