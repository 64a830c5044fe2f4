import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import MoECore
import MoEProto
import MoEServing
import MoEWire
import ServiceLifecycle
import Synchronization

/// An expert service's link to the coordinator: registers once the server listens, heartbeats its load every
/// interval, registers again when the coordinator no longer knows it (lease lost, coordinator restarted), keeps
/// trying while the coordinator is down (serving goes on), and deregisters at shutdown, before the server stops,
/// so that routers stop sending work while the calls in flight finish.
public struct CoordinatorAgent: Service {
    /// The address the server listens on, once it does.
    public typealias Listening = SetOnce<ServiceEndpoint>

    public let coordinator: ServiceEndpoint
    /// The registration, without the endpoint (filled in from `listening` and `advertiseHost`).
    public let registration: Moemesh_V1_RegisterRequest
    public let listening: Listening
    /// The host routers should use (a pod's IP); nil: the listening host.
    public let advertiseHost: String?
    public let meter: ExpertLoadMeter
    public let serving: ServingConfiguration
    public let logger: Logger
    /// Called after each successful registration.
    public let onRegistered: @Sendable () -> Void

    public init(
        coordinator: ServiceEndpoint, registration: Moemesh_V1_RegisterRequest, listening: Listening,
        advertiseHost: String?, meter: ExpertLoadMeter, serving: ServingConfiguration, logger: Logger,
        onRegistered: @escaping @Sendable () -> Void = {}
    ) {
        self.coordinator = coordinator
        self.registration = registration
        self.listening = listening
        self.advertiseHost = advertiseHost
        self.meter = meter
        self.serving = serving
        self.logger = logger
        self.onRegistered = onRegistered
    }

    public func run() async throws {
        let client = try self.serving.makeClient(to: self.coordinator)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await client.runConnections() }
            // Closed at once when done: a call may still be waiting for a coordinator that is gone.
            defer {
                client.beginGracefulShutdown()
                group.cancelAll()
            }
            let coordinator = Moemesh_V1_Coordinator.Client(wrapping: client)
            // Registered once the server listens; shutdown before that ends the wait.
            guard let listening = await cancelWhenGracefulShutdown({ await self.listening.wait() }) else { return }
            var registration = self.registration
            registration.endpoint =
                ServiceEndpoint(host: self.advertiseHost ?? listening.host, port: listening.port).description
            let experts = registration.experts.map(\.address)
            var replicaID: String? = nil
            var interval = Duration.milliseconds(500)
            var reachable = true
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                do {
                    if let id = replicaID {
                        var heartbeat = Moemesh_V1_HeartbeatRequest()
                        heartbeat.replicaID = id
                        heartbeat.load = self.meter.snapshot(experts: experts)
                        let answer = try await coordinator.heartbeat(
                            heartbeat, options: self.serving.coordinatorCallOptions(timeout: .seconds(2)))
                        if !answer.known {
                            self.logger.notice("the coordinator no longer knows this replica; registering again")
                            replicaID = nil
                            continue
                        }
                    } else {
                        let answer = try await coordinator.register(
                            registration, options: self.serving.coordinatorCallOptions(timeout: .seconds(2)))
                        replicaID = answer.replicaID
                        self.onRegistered()
                        interval = .milliseconds(max(50, answer.heartbeatIntervalMs))
                        self.logger.info(
                            "registered with the coordinator",
                            metadata: [
                                "coordinator": "\(self.coordinator)", "replica": "\(answer.replicaID)",
                                "endpoint": "\(registration.endpoint)",
                            ])
                    }
                    reachable = true
                } catch let error as RPCError where error.code == .invalidArgument || error.code == .notFound {
                    // Refused, not unreachable: trying again cannot help.
                    throw CoordinatorRegistrationError(coordinator: self.coordinator, reason: error.message)
                } catch {
                    if reachable {
                        self.logger.warning(
                            "coordinator unreachable; serving on and retrying",
                            metadata: ["coordinator": "\(self.coordinator)", "error": "\(error)"])
                    }
                    reachable = false
                }
                // periodic: the heartbeat (or the retry while the coordinator is down)
                try? await Task.sleep(for: interval)
            }
            if let id = replicaID {
                var request = Moemesh_V1_DeregisterRequest()
                request.replicaID = id
                do {
                    _ = try await coordinator.deregister(
                        request, options: self.serving.coordinatorCallOptions(timeout: .seconds(1)))
                    self.logger.info("deregistered from the coordinator", metadata: ["replica": "\(id)"])
                } catch {
                    self.logger.debug("could not deregister", metadata: ["error": "\(error)"])
                }
            }
        }
    }
}

/// The coordinator refused this replica (wrong model, unknown experts).
public struct CoordinatorRegistrationError: Error, CustomStringConvertible {
    public let coordinator: ServiceEndpoint
    public let reason: String

    public var description: String { "the coordinator at \(self.coordinator) refused this replica: \(self.reason)" }
}
