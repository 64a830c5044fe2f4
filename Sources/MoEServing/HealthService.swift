import GRPCCore
import MoEProto
import Synchronization

/// `grpc.health.v1.Health`: the serving status of this process (service name "") and of each of its gRPC services
/// (e.g. "moemesh.v1.Router"). A role starts NOT_SERVING, turns SERVING once ready (weights loaded, registered,
/// experts covered) and NOT_SERVING again while it shuts down. `Watch` streams every change.
public final class HealthService: Grpc_Health_V1_Health.SimpleServiceProtocol, Sendable {
    public typealias Status = Grpc_Health_V1_HealthCheckResponse.ServingStatus

    /// Hears the changes of one service's status until it ends (the process stopping) or is removed.
    struct Watcher {
        let service: String
        let changed: @Sendable (Status) -> Void
        let ended: @Sendable () -> Void
    }

    private struct State {
        var statuses: [String: Status]
        var watchers: [Int: Watcher] = [:]
        var nextWatcher = 0
    }

    private let state: Mutex<State>
    /// The gRPC services this process serves besides health (and reflection), by full name.
    public let services: [String]

    /// - Parameter services: the gRPC services to report besides the whole process (""), all NOT_SERVING.
    public init(services: [String]) {
        self.services = services
        self.state = Mutex(
            State(statuses: Dictionary(uniqueKeysWithValues: ([""] + services).map { ($0, .notServing) })))
    }

    /// Sets every reported service (and the process) to `status`.
    public func setAll(_ status: Status) {
        let watchers = self.state.withLock { state in
            for key in state.statuses.keys { state.statuses[key] = status }
            return state.watchers.values.filter { state.statuses[$0.service] != nil }
        }
        for watcher in watchers { watcher.changed(status) }
    }

    /// NOT_SERVING, and every `Watch` stream ends (the server is stopping and waits for its calls).
    public func shutDown() {
        self.setAll(.notServing)
        let watchers = self.state.withLock { state in
            defer { state.watchers = [:] }
            return Array(state.watchers.values)
        }
        for watcher in watchers { watcher.ended() }
    }

    /// Calls `changed` with `service`'s status now and at every change (`.serviceUnknown` for a service this
    /// process does not report), and `ended` when the process stops; returns the id that `stopWatching` takes.
    func watch(
        _ service: String, changed: @escaping @Sendable (Status) -> Void, ended: @escaping @Sendable () -> Void
    ) -> Int {
        let (id, status) = self.state.withLock { state in
            let id = state.nextWatcher
            state.nextWatcher += 1
            state.watchers[id] = Watcher(service: service, changed: changed, ended: ended)
            return (id, state.statuses[service] ?? .serviceUnknown)
        }
        changed(status)
        return id
    }

    func stopWatching(_ id: Int) { _ = self.state.withLock { $0.watchers.removeValue(forKey: id) } }

    public func status(of service: String) -> Status? { self.state.withLock { $0.statuses[service] } }

    public func check(
        request: Grpc_Health_V1_HealthCheckRequest, context: ServerContext
    ) async throws -> Grpc_Health_V1_HealthCheckResponse {
        try self.check(request)
    }

    /// The status of `request.service`, or NOT_FOUND naming the services this process reports.
    func check(_ request: Grpc_Health_V1_HealthCheckRequest) throws(RPCError) -> Grpc_Health_V1_HealthCheckResponse {
        guard let status = self.status(of: request.service) else {
            let known = self.state.withLock { $0.statuses.keys.filter { !$0.isEmpty }.sorted() }
            throw RPCError(
                code: .notFound,
                message:
                    "unknown service '\(request.service)'; this process reports \"\" (itself) and \(known.joined(separator: ", "))"
            )
        }
        return .with { $0.status = status }
    }

    public func list(
        request: Grpc_Health_V1_HealthListRequest, context: ServerContext
    ) async throws -> Grpc_Health_V1_HealthListResponse {
        self.list()
    }

    /// Every status this process reports.
    func list() -> Grpc_Health_V1_HealthListResponse {
        let statuses = self.state.withLock { $0.statuses }
        return .with { response in
            response.statuses = statuses.mapValues { status in .with { $0.status = status } }
        }
    }

    public func watch(
        request: Grpc_Health_V1_HealthCheckRequest, response: RPCWriter<Grpc_Health_V1_HealthCheckResponse>,
        context: ServerContext
    ) async throws {
        let (stream, continuation) = AsyncStream.makeStream(of: Status.self, bufferingPolicy: .bufferingNewest(1))
        let id = self.watch(request.service, changed: { continuation.yield($0) }, ended: { continuation.finish() })
        defer { self.stopWatching(id) }
        for await status in stream {
            try await response.write(.with { $0.status = status })
        }
    }
}
