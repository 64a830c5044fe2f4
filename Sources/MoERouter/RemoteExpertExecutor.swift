import GRPCCore
import MoECore
import MoEProto
import MoERuntime
import MoEServing
import Tracing

/// Runs an expert through its service: one `Compute` RPC carrying the expert's rows, gathered straight into the
/// outgoing message.
public struct RemoteExpertExecutor: ExpertExecutor {
    public let topology: ExpertTopology
    public let wireDType: DType
    public let callOptions: CallOptions
    /// Counts the rows sent to each expert (reported to the coordinator).
    public let demand: DemandMeter?
    /// Starts an expert that has no replica (scaled to zero) and returns once one serves.
    public let coldStart: (@Sendable (ExpertAddress) async throws -> Void)?
    /// Call latency and retries per expert.
    public let metrics: ServiceMetrics?
    /// A client span per expert call, its context sent in the call's metadata.
    public let tracer: any Tracer

    public init(
        topology: ExpertTopology, wireDType: DType, callOptions: CallOptions, demand: DemandMeter? = nil,
        coldStart: (@Sendable (ExpertAddress) async throws -> Void)? = nil, metrics: ServiceMetrics? = nil,
        tracer: any Tracer = InstrumentationSystem.tracer
    ) {
        self.topology = topology
        self.wireDType = wireDType
        self.callOptions = callOptions
        self.demand = demand
        self.coldStart = coldStart
        self.metrics = metrics
        self.tracer = tracer
    }

    /// Sends the rows to the best replica; if it cannot be reached (`UNAVAILABLE`, deadline, connection lost), to
    /// the next, until every replica has been tried. An expert with no replica that the coordinator can start is
    /// cold-started first (the call waits for it).
    public func compute(_ rows: ExpertRows) async throws -> Matrix {
        let address = rows.address
        self.demand?.record(address, rows: rows.count)
        var candidates = self.topology.candidates(for: address)
        if candidates.isEmpty, let coldStart = self.coldStart, self.topology.isStartable(address) {
            do {
                try await coldStart(address)
            } catch {
                throw RouterError.coldStartFailed(address, reason: "\(error)")
            }
            candidates = self.topology.candidates(for: address)
        }
        guard !candidates.isEmpty else { throw RouterError.noReplica(address) }
        var request = Moemesh_V1_ComputeRequest()
        request.layer = rows.layer
        request.expert = Int32(rows.expert)
        request.rows = Moemesh_V1_Tensor(
            count: rows.count * rows.width, shape: [rows.count, rows.width], dtype: self.wireDType,
            gather: rows.gather(into:))

        var failures: [String] = []
        var tried = Set<ServiceEndpoint>()
        var answer: (replica: ExpertReplica, response: Moemesh_V1_ComputeResponse)? = nil
        let replacementDeadline = ContinuousClock.now + min(self.callOptions.timeout ?? Self.replacementWait, Self.replacementWait)
        while answer == nil {
            for replica in candidates where !tried.contains(replica.endpoint) {
                tried.insert(replica.endpoint)
                self.topology.callStarted(replica.endpoint)
                let callStarted = ContinuousClock.now
                do {
                    let response = try await self.tracer.withSpan("moemesh.v1.Expert/Compute", ofKind: .client) { span in
                        span.attributes["rpc.system"] = "grpc"
                        span.attributes["moemesh.layer"] = address.layer
                        span.attributes["moemesh.expert"] = address.expert
                        span.attributes["moemesh.rows"] = rows.count
                        span.attributes["server.address"] = replica.endpoint.description
                        return try await replica.compute(
                            request, metadata: propagatedMetadata(tracer: self.tracer), options: self.callOptions)
                    }
                    self.topology.callEnded(replica.endpoint, failed: false)
                    self.metrics?.timer("moemesh_router_expert_call_seconds", address.metricLabels)
                        .record(duration: ContinuousClock.now - callStarted)
                    answer = (replica, response)
                    break
                } catch let error as RPCError where Self.isReachabilityFailure(error.code) && !Task.isCancelled {
                    self.topology.callEnded(replica.endpoint, failed: true)
                    self.metrics?.counter("moemesh_router_expert_retries_total", address.metricLabels).increment()
                    failures.append("\(replica.endpoint): \(error.code): \(error.message)")
                } catch let error as RPCError {
                    self.topology.callEnded(replica.endpoint, failed: false)
                    throw RouterError.expertFailed(address, endpoint: replica.endpoint, reason: "\(error.code): \(error.message)")
                } catch {
                    self.topology.callEnded(replica.endpoint, failed: true)
                    throw error
                }
            }
            guard answer == nil else { break }
            // Under a coordinator, a replica that died is replaced: wait (briefly) for the topology to name another.
            guard self.coldStart != nil,
                let replacements = await self.waitForReplica(of: address, other: tried, until: replacementDeadline)
            else {
                throw RouterError.expertUnavailable(
                    address, endpoint: candidates.last!.endpoint,
                    reason: "all \(tried.count) replicas failed: " + failures.joined(separator: "; "))
            }
            candidates = replacements
        }
        let (replica, response) = answer!
        let decoded: DecodedRows
        do {
            decoded = try response.rows.decodeTokenRows(
                field: "expert answer", hiddenSize: rows.width, allowedRanks: [2], shapeDescription: "[N, H]")
        } catch {
            throw RouterError.expertFailed(address, endpoint: replica.endpoint, reason: error.description)
        }
        guard decoded.matrix.rows == rows.count else {
            throw RouterError.expertFailed(
                address, endpoint: replica.endpoint, reason: "answered \(decoded.matrix.rows) rows for the \(rows.count) sent")
        }
        return decoded.matrix
    }
}

extension RemoteExpertExecutor {
    /// Sends one `Prefetch` hint to each replica serving any of `addresses`, naming the experts it serves; returns at
    /// once. A hint that fails changes nothing (the `Compute` call loads the expert as without it): it is counted.
    public func prefetch(_ addresses: [ExpertAddress]) {
        var experts: [ServiceEndpoint: [ExpertAddress]] = [:]
        var replicas: [ServiceEndpoint: ExpertReplica] = [:]
        for address in addresses {
            for replica in self.topology.candidates(for: address) {
                experts[replica.endpoint, default: []].append(address)
                replicas[replica.endpoint] = replica
            }
        }
        let metrics = self.metrics, options = self.callOptions
        for (endpoint, addresses) in experts {
            let replica = replicas[endpoint]!
            let request = Moemesh_V1_PrefetchRequest.with { $0.experts = addresses.map(Moemesh_V1_ExpertKey.init) }
            Task {
                do {
                    _ = try await replica.prefetch(request, options: options)
                    metrics?.counter("moemesh_router_prefetch_hints_total").increment()
                } catch {
                    metrics?.counter("moemesh_router_prefetch_failures_total").increment()
                }
            }
        }
    }

    /// How long a call whose replicas all failed waits for the coordinator to name a replacement.
    static let replacementWait: Duration = .seconds(10)

    /// Candidates for `address` not in `tried`, once the topology has some; nil if none came by `deadline`.
    func waitForReplica(
        of address: ExpertAddress, other tried: Set<ServiceEndpoint>, until deadline: ContinuousClock.Instant
    ) async -> [ExpertReplica]? {
        while ContinuousClock.now < deadline && !Task.isCancelled {
            let fresh = self.topology.candidates(for: address).filter { !tried.contains($0.endpoint) }
            if !fresh.isEmpty { return fresh }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }

    /// Codes that say the replica could not serve the call (not that the call was wrong): try another one.
    static func isReachabilityFailure(_ code: RPCError.Code) -> Bool {
        code == .unavailable || code == .deadlineExceeded || code == .cancelled
    }
}
