import CoreMetrics
import GRPCCore
import MoECore
import Synchronization

/// Metrics of one service, created through the factory in force when it was made (the task-local one in tests,
/// the process's Prometheus registry otherwise), by name and labels, once each.
///
/// Series (Prometheus names; labels in braces):
/// - every service: `moemesh_rpc_requests_total{service,method}`, `moemesh_rpc_errors_total{service,method,code}`;
/// - expert: `moemesh_expert_rows_total{layer,expert}`, `moemesh_expert_calls_total{layer,expert}`,
///   `moemesh_expert_compute_seconds{layer,expert}` (histogram), `moemesh_expert_rows_in_flight`,
///   `moemesh_expert_calls_cancelled_total{layer,expert}` (callers gone before the expert ran);
/// - router: `moemesh_router_requests_total{layer}`, `moemesh_router_tokens_total{layer}`,
///   `moemesh_router_request_seconds{layer}` (histogram), `moemesh_router_expert_rows_total{layer,expert}` (tokens
///   routed per expert), `moemesh_router_expert_call_seconds{layer,expert}` (histogram),
///   `moemesh_router_expert_retries_total{layer,expert}`, `moemesh_router_hedges_total{layer,expert}` (hedged calls),
///   `moemesh_router_hedge_wins_total{layer,expert}` (the hedge answered first), `moemesh_router_ejections_total{endpoint}`,
///   `moemesh_router_dropped_slots_total{layer}`,
///   `moemesh_router_rerouted_total{layer}`, `moemesh_router_balancedness{layer}` (of the last request);
/// - coordinator: `moemesh_coordinator_replicas{group,state}`, `moemesh_coordinator_desired_replicas{group}`,
///   `moemesh_coordinator_demand_rows_per_second{group}`, `moemesh_coordinator_scaling_decisions_total{direction}`.
public final class ServiceMetrics: Sendable {
    private struct Key: Hashable {
        let label: String
        let dimensions: [String]
    }

    private let factory: any MetricsFactory
    private let counters = Mutex<[Key: Counter]>([:])
    private let gauges = Mutex<[Key: Gauge]>([:])
    private let timers = Mutex<[Key: CoreMetrics.Timer]>([:])

    /// Uses `MetricsSystem.factory` as it is now (the task-local factory, if one is bound).
    public init() { self.factory = MetricsSystem.factory }

    private static func key(_ label: String, _ dimensions: [(String, String)]) -> Key {
        Key(label: label, dimensions: dimensions.flatMap { [$0.0, $0.1] })
    }

    public func counter(_ label: String, _ dimensions: [(String, String)] = []) -> Counter {
        self.counters.withLock { counters in
            let key = Self.key(label, dimensions)
            if let counter = counters[key] { return counter }
            let counter = Counter(label: label, dimensions: dimensions, factory: self.factory)
            counters[key] = counter
            return counter
        }
    }

    public func gauge(_ label: String, _ dimensions: [(String, String)] = []) -> Gauge {
        self.gauges.withLock { gauges in
            let key = Self.key(label, dimensions)
            if let gauge = gauges[key] { return gauge }
            let gauge = Gauge(label: label, dimensions: dimensions, factory: self.factory)
            gauges[key] = gauge
            return gauge
        }
    }

    /// Destroys the gauges that carry `dimension` = `value` (a coordinator's group that is gone): their series leave
    /// `/metrics` instead of showing their last value for ever.
    public func removeGauges(where dimension: String, is value: String) {
        let removed = self.gauges.withLock { gauges in
            let keys = gauges.keys.filter { key in
                stride(from: 0, to: key.dimensions.count - 1, by: 2).contains {
                    key.dimensions[$0] == dimension && key.dimensions[$0 + 1] == value
                }
            }
            return keys.compactMap { gauges.removeValue(forKey: $0) }
        }
        for gauge in removed { gauge.destroy() }
    }

    /// A duration histogram.
    public func timer(_ label: String, _ dimensions: [(String, String)] = []) -> CoreMetrics.Timer {
        self.timers.withLock { timers in
            let key = Self.key(label, dimensions)
            if let timer = timers[key] { return timer }
            let timer = CoreMetrics.Timer(label: label, dimensions: dimensions, factory: self.factory)
            timers[key] = timer
            return timer
        }
    }
}

/// Counts every call a server handles, and its failures by gRPC status code.
public struct RPCMetricsInterceptor: ServerInterceptor {
    public let metrics: ServiceMetrics
    /// `expert`, `router`, `coordinator`.
    public let service: String

    public init(metrics: ServiceMetrics, service: String) {
        self.metrics = metrics
        self.service = service
    }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>, context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let method = context.descriptor.method
        self.metrics.counter("moemesh_rpc_requests_total", [("service", self.service), ("method", method)]).increment()
        let response: StreamingServerResponse<Output>
        do {
            response = try await next(request, context)
        } catch {
            self.recordError(
                method: method,
                code: (error as? RPCError)?.code ?? (error as? any RPCErrorConvertible)?.rpcErrorCode ?? .unknown)
            throw error
        }
        if case .failure(let error) = response.accepted { self.recordError(method: method, code: error.code) }
        return response
    }

    private func recordError(method: String, code: RPCError.Code) {
        self.metrics.counter(
            "moemesh_rpc_errors_total", [("service", self.service), ("method", method), ("code", "\(code)")]
        ).increment()
    }
}

extension CoreMetrics.Timer {
    /// Records `duration`, in nanoseconds.
    public func record(duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self.recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

extension ExpertAddress {
    /// `layer`, `expert` (a number, or `shared`).
    public var metricLabels: [(String, String)] {
        [("layer", self.layer), ("expert", self.isShared ? "shared" : String(self.expert))]
    }
}
