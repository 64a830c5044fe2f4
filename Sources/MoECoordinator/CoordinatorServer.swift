import GRPCCore
import GRPCNIOTransportHTTP2
import MoECore
import MoEProto
import MoEServing
import ServiceLifecycle
import Synchronization

/// The coordinator's gRPC API and its loop (`Coordinator.tick` every 100 ms), until graceful shutdown (or `stop`);
/// then the topology streams end (routers keep their last topology) and the server finishes its calls.
public struct CoordinatorServer: Sendable {
    public let coordinator: Coordinator
    private let transport: HTTP2ServerTransport.Posix
    private let server: GRPCServer<HTTP2ServerTransport.Posix>
    private let stopped = StopSignal()
    /// `grpc.health.v1`: SERVING once `markReady` (the scaler has started).
    public let health = HealthService(services: [Moemesh_V1_Coordinator.descriptor.fullyQualifiedService])

    public init(coordinator: Coordinator, serving: ServingConfiguration) {
        self.coordinator = coordinator
        self.transport = serving.makeServerTransport()
        self.server = GRPCServer(
            transport: self.transport,
            services: [
                CoordinatorService(coordinator: coordinator), self.health,
                ServerReflectionService(reflection: ServerReflection(services: self.health.services)),
            ],
            interceptors: serving.authInterceptors + (serving.isProtected ? [Self.protectedMode] : []) + [
                RPCMetricsInterceptor(metrics: coordinator.metrics, service: "coordinator"),
                RPCCancellationInterceptor(),
            ])
        // Heartbeats and demand reports are too frequent to trace.
    }

    /// The calls that change the coordinator: taken only from its own host in protected mode. Reading (the
    /// topology, the status) stays open, as the status page is.
    static let protectedMode = ProtectedModeInterceptor(methods: [
        Moemesh_V1_Coordinator.Method.Register.descriptor, Moemesh_V1_Coordinator.Method.Heartbeat.descriptor,
        Moemesh_V1_Coordinator.Method.Deregister.descriptor, Moemesh_V1_Coordinator.Method.ReportDemand.descriptor,
        Moemesh_V1_Coordinator.Method.EnsureExperts.descriptor, Moemesh_V1_Coordinator.Method.SetPruned.descriptor,
        Moemesh_V1_Coordinator.Method.DrainReplica.descriptor, Moemesh_V1_Coordinator.Method.ApplyPlan.descriptor,
    ])

    /// The bound address, once listening.
    public var listeningEndpoint: ServiceEndpoint {
        get async throws {
            let address = try await self.transport.listeningAddress
            if let endpoint = ServiceEndpoint(listening: address) { return endpoint }
            throw RPCError(code: .internalError, message: "the coordinator listens on \(address), not an IP address")
        }
    }

    /// Serves until `stop`, and also until graceful shutdown when `untilGracefulShutdown` (a mesh that must stop
    /// its processes first keeps its coordinator up until then).
    public func serve(untilGracefulShutdown: Bool = true) async throws {
        let (coordinator, server, stopped) = (self.coordinator, self.server, self.stopped)
        let run = {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await server.serve() }
                group.addTask {
                    while !stopped.isSet && !Task.isCancelled
                        && !(untilGracefulShutdown && Task.isShuttingDownGracefully)
                    {
                        await coordinator.tick()
                        // The coordinator's clock (leases, drains, scaling): the next tick in 100 ms, or none once
                        // stopped, at once.
                        await untilFirstEnds(
                            { try? await Task.sleep(for: .milliseconds(100)) }, { await stopped.wait() })
                    }
                }
            }
        }
        if untilGracefulShutdown {
            try await withGracefulShutdownHandler {
                try await run()
            } onGracefulShutdown: {
                self.stop()
            }
        } else {
            try await run()
        }
    }

    /// Ends the topology streams, then stops the server once its calls have finished.
    public func stop() {
        self.stopped.set()
        self.health.shutDown()
        // `stop` is called from synchronous code (shutdown handlers); closing the watchers needs the actor.
        Task {
            await self.coordinator.closeWatchers()
            self.server.beginGracefulShutdown()
        }
    }
}
