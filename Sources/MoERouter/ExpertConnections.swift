import GRPCCore
import GRPCNIOTransportHTTP2
import MoEProto
import MoEServing
import Synchronization

/// One gRPC client per expert endpoint, opened when a topology first names it and closed gracefully (calls in
/// flight finish) when a topology no longer does. `run` runs their connections until shutdown.
public final class ExpertConnections: Sendable {
    private struct State {
        var clients: [ServiceEndpoint: GRPCClient<HTTP2ClientTransport.Posix>] = [:]
        var closed = false
    }

    private let serving: ServingConfiguration
    private let state = Mutex(State())
    private let opened: AsyncStream<GRPCClient<HTTP2ClientTransport.Posix>>
    private let openedContinuation: AsyncStream<GRPCClient<HTTP2ClientTransport.Posix>>.Continuation

    public init(serving: ServingConfiguration) {
        self.serving = serving
        (self.opened, self.openedContinuation) = AsyncStream.makeStream()
    }

    /// The replica at `endpoint`, connecting on first use.
    public func replica(at endpoint: ServiceEndpoint) throws -> ExpertReplica {
        let client = try self.state.withLock { state in
            if let client = state.clients[endpoint] { return client }
            let client = GRPCClient(transport: try self.serving.makeClientTransport(to: endpoint))
            state.clients[endpoint] = client
            if state.closed { client.beginGracefulShutdown() }
            self.openedContinuation.yield(client)
            return client
        }
        return ExpertReplica(endpoint: endpoint, client: Moemesh_V1_Expert.Client(wrapping: client))
    }

    /// Closes the connections to endpoints not in `endpoints`.
    public func keepOnly(_ endpoints: Set<ServiceEndpoint>) {
        let dropped = self.state.withLock { state in
            let dropped = state.clients.filter { !endpoints.contains($0.key) }
            for endpoint in dropped.keys { state.clients[endpoint] = nil }
            return dropped.values
        }
        dropped.forEach { $0.beginGracefulShutdown() }
    }

    /// Runs every connection until `close`.
    public func run() async {
        await withDiscardingTaskGroup { group in
            for await client in self.opened {
                group.addTask { try? await client.runConnections() }
            }
        }
    }

    /// Closes every connection (calls in flight finish) and ends `run`.
    public func close() {
        let clients = self.state.withLock { state in
            state.closed = true
            return Array(state.clients.values)
        }
        clients.forEach { $0.beginGracefulShutdown() }
        self.openedContinuation.finish()
    }
}
