import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import MoECore
import MoEProto
import MoEServing
import MoEWire
import ServiceLifecycle
import Synchronization

/// Rows this router sent to each expert since the last report.
public final class DemandMeter: Sendable {
    private let rows = Mutex<[ExpertAddress: Int]>([:])

    public init() {}

    public func record(_ address: ExpertAddress, rows: Int) {
        self.rows.withLock { $0[address, default: 0] += rows }
    }

    /// The counts since the previous call, which starts a new count.
    public func take() -> [ExpertAddress: Int] {
        self.rows.withLock { rows in
            defer { rows = [:] }
            return rows
        }
    }
}

/// Per layer, how often each pair of experts was chosen for the same token since the last report.
public final class CoactivationMeter: Sendable {
    private let layers = Mutex<[String: Coactivation]>([:])

    public init() {}

    /// Counts the tokens of one routed batch of `layer`.
    public func record(layer: String, _ decision: RoutingDecision) {
        self.layers.withLock { layers in
            layers[layer, default: Coactivation(experts: decision.numExperts)].add(decision)
        }
    }

    /// The counts since the previous call, which starts new ones.
    public func take() -> [String: Coactivation] {
        self.layers.withLock { layers in
            defer { layers = [:] }
            return layers
        }
    }
}

/// A router's link to the coordinator: follows its topology stream (resubscribing while it is down; the last
/// topology stays in use meanwhile), reports demand every second, and asks it to start experts with no replica.
public final class CoordinatorLink: Sendable {
    public let coordinator: ServiceEndpoint
    public let routerID: String
    public let topology: ExpertTopology
    public let connections: ExpertConnections
    /// Its ejections are reported with the demand.
    public let scheduler: ReplicaScheduler
    public let demand = DemandMeter()
    /// Reported with the demand.
    public let coactivation = CoactivationMeter()
    private let client: GRPCClient<HTTP2ClientTransport.Posix>
    private let serving: ServingConfiguration
    private let logger: Logger
    /// Cold starts asked for and not yet answered, each shared by every caller that asks for its expert meanwhile.
    private let coldStarts = Mutex<[ExpertAddress: SetOnce<Result<Void, any Error>>]>([:])
    /// Cold starts for `run()` to make, each in a child task of its own.
    private let coldStartJobs: AsyncStream<ColdStart>
    private let coldStartQueue: AsyncStream<ColdStart>.Continuation

    private struct ColdStart: Sendable {
        let address: ExpertAddress
        let timeout: Duration
        let outcome: SetOnce<Result<Void, any Error>>
    }
    /// Whether the topology stream is up.
    private let following = Mutex(false)

    /// How often demand is reported.
    public static let reportInterval: Duration = .seconds(1)

    public init(
        coordinator: ServiceEndpoint, routerID: String, topology: ExpertTopology, connections: ExpertConnections,
        scheduler: ReplicaScheduler, serving: ServingConfiguration, logger: Logger
    ) throws {
        self.scheduler = scheduler
        self.coordinator = coordinator
        self.routerID = routerID
        self.topology = topology
        self.connections = connections
        self.client = try serving.makeClient(to: coordinator)
        self.serving = serving
        self.logger = logger
        (self.coldStartJobs, self.coldStartQueue) = AsyncStream.makeStream()
    }

    private var api: Moemesh_V1_Coordinator.Client<HTTP2ClientTransport.Posix> { .init(wrapping: self.client) }

    /// Runs the connection, the topology stream, the demand reports and the cold starts until graceful shutdown.
    public func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.client.runConnections() }
            await withDiscardingTaskGroup { loops in
                loops.addTask { await self.followTopology() }
                loops.addTask { await self.reportDemand() }
                loops.addTask { await self.makeColdStarts() }
            }
            // Nothing left worth waiting for (a call may still be waiting for a coordinator that is gone): close now.
            self.client.beginGracefulShutdown()
            group.cancelAll()
        }
    }

    private func followTopology() async {
        let request = Moemesh_V1_WatchTopologyRequest.with { $0.routerID = self.routerID }
        var backoff = Duration.milliseconds(100)
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                try await cancelWhenGracefulShutdown {
                    try await self.api.watchTopology(request, options: self.serving.coordinatorCallOptions()) {
                        response in
                        for try await topology in response.messages {
                            if !self.following.withLock({ following in
                                defer { following = true }; return following
                            }) {
                                self.logger.notice(
                                    "following the coordinator's topology",
                                    metadata: ["coordinator": "\(self.coordinator)"])
                            }
                            self.apply(topology)
                        }
                    }
                }
                // The coordinator ended the stream (it is stopping): resubscribe, to it or its successor.
                if self.following.withLock({ following in
                    defer { following = false }; return following
                }) {
                    self.logger.notice(
                        "the coordinator ended the topology stream; serving with the last topology and resubscribing")
                }
                backoff = .milliseconds(100)
            } catch {
                if self.following.withLock({ following in
                    defer { following = false }; return following
                }),
                    !Task.isShuttingDownGracefully
                {
                    self.logger.warning(
                        "coordinator unreachable; serving with the last topology and resubscribing",
                        metadata: ["coordinator": "\(self.coordinator)", "error": "\(error)"])
                }
            }
            try? await Task.sleep(for: backoff)  // backoff before resubscribing
            backoff = min(backoff * 2, .seconds(1))
        }
    }

    /// Uses a topology from the coordinator: serving replicas only (draining ones get no new work).
    public func apply(_ topology: Moemesh_V1_Topology) {
        var replicas: [ExpertAddress: [ExpertReplica]] = [:]
        var endpoints = Set<ServiceEndpoint>()
        var precisions: [ExpertAddress: [String: Int]] = [:]
        let draining = Set(
            topology.replicas.filter { $0.state == .draining }.compactMap { ServiceEndpoint($0.endpoint) })
        for replica in topology.replicas where replica.state == .serving {
            guard let endpoint = ServiceEndpoint(replica.endpoint),
                let connection = try? self.connections.replica(
                    at: endpoint, unixSocket: replica.unixSocket, host: replica.hostID)
            else {
                self.logger.error("topology names an unusable endpoint", metadata: ["endpoint": "\(replica.endpoint)"])
                continue
            }
            endpoints.insert(endpoint)
            for key in replica.experts { replicas[key.address, default: []].append(connection) }
            for entry in replica.precisions {
                precisions[entry.expert.address, default: [:]][entry.precision, default: 0] += 1
            }
        }
        self.topology.setPrecisions(precisions)
        self.topology.update(
            replicas: replicas, startable: Set(topology.startable.map(\.address)),
            pruned: Set(topology.pruned.map(\.address)),
            version: topology.version, draining: draining)
        // A draining replica's connection stays open for the calls it is finishing.
        self.connections.keepOnly(endpoints.union(draining))
        self.logger.debug(
            "topology",
            metadata: [
                "version": "\(topology.version)", "replicas": "\(endpoints.count)",
                "pruned": "\(topology.pruned.count)",
            ])
    }

    private func reportDemand() async {
        var last = ContinuousClock.now
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await Task.sleep(for: Self.reportInterval)  // periodic: demand is reported every second
            let rows = self.demand.take()
            var report = Moemesh_V1_DemandReport()
            report.routerID = self.routerID
            report.intervalMs = Int64((ContinuousClock.now - last).milliseconds)
            last = .now
            report.demand = rows.sorted { $0.key < $1.key }.map { address, count in
                var item = Moemesh_V1_ExpertDemand()
                item.expert = Moemesh_V1_ExpertKey(address)
                item.rows = Int64(count)
                return item
            }
            report.coactivation = self.coactivation.take().sorted { $0.key < $1.key }.map { layer, counts in
                Moemesh_V1_LayerCoactivation(counts, layer: layer)
            }
            report.ejections = self.scheduler.takeEjections().map { ejection in
                .with {
                    $0.endpoint = ejection.endpoint.description
                    $0.reason = ejection.reason
                    $0.durationMs = Int64(ejection.duration.milliseconds)
                }
            }
            report.links = self.connections.links.sorted { $0.key < $1.key }.map { endpoint, transport in
                .with {
                    $0.endpoint = endpoint.description
                    $0.transport = transport
                }
            }
            do {
                _ = try await self.api.reportDemand(
                    report, options: self.serving.coordinatorCallOptions(timeout: .seconds(2)))
            } catch {
                self.logger.debug("could not report demand", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Asks the coordinator to start `address` and waits, within `timeout`, until a replica serves it. Concurrent
    /// requests for the same expert share one call, made by `run()`, so that one caller's cancellation does not end
    /// it for the others; a caller cancelled stops waiting at once.
    public func coldStart(_ address: ExpertAddress, timeout: Duration) async throws {
        let (outcome, asked) = self.coldStarts.withLock { waiting in
            if let shared = waiting[address] { return (shared, false) }
            let outcome = SetOnce<Result<Void, any Error>>()
            waiting[address] = outcome
            return (outcome, true)
        }
        if asked {
            guard
                case .enqueued = self.coldStartQueue.yield(
                    ColdStart(address: address, timeout: timeout, outcome: outcome))
            else {
                self.coldStarts.withLock { _ = $0.removeValue(forKey: address) }
                throw RPCError(code: .unavailable, message: "the router is shutting down: no cold start of \(address)")
            }
        }
        guard let result = await outcome.wait() else { throw CancellationError() }
        try result.get()
    }

    /// Makes each cold start asked for, in a child task, until graceful shutdown (those in flight finish: their
    /// callers wait for them).
    private func makeColdStarts() async {
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for await job in self.coldStartJobs {
                    group.addTask {
                        let result: Result<Void, any Error>
                        do {
                            var request = Moemesh_V1_EnsureExpertsRequest()
                            request.experts = [Moemesh_V1_ExpertKey(job.address)]
                            request.reason = "router \(self.routerID)"
                            self.logger.info("cold start", metadata: ["expert": "\(job.address)"])
                            let topology = try await self.api.ensureExperts(
                                request, options: self.serving.coordinatorCallOptions(timeout: job.timeout))
                            self.apply(topology)
                            result = .success(())
                        } catch {
                            result = .failure(error)
                        }
                        self.coldStarts.withLock { _ = $0.removeValue(forKey: job.address) }
                        job.outcome.set(result)
                    }
                }
            }
        } onGracefulShutdown: {
            self.coldStartQueue.finish()
        }
    }
}
