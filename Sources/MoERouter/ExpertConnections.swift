import GRPCCore
import GRPCNIOTransportHTTP2
import MoEProto
import MoEServing
import ServiceLifecycle
import Synchronization

/// One gRPC client per expert endpoint, opened when a topology first names it and closed gracefully (calls in
/// flight finish) when a topology no longer does; over each, with `streams`, one long-lived `ComputeStream` for the
/// expert calls. A replica on this host that listens on a Unix domain socket too (its registration says which host,
/// see `HostIdentity`) is reached through the socket: no TCP/IP stack, no loopback checksums. `run` runs their
/// connections and streams until shutdown.
public final class ExpertConnections: Sendable {
    private struct Connection {
        let client: GRPCClient<HTTP2ClientTransport.Posix>
        let stream: ComputeStreamChannel?
        /// "tcp HOST:PORT" or "unix PATH".
        let transport: String
        let id: UInt64
    }

    private struct State {
        var connections: [ServiceEndpoint: Connection] = [:]
        var closed = false
        var opened: UInt64 = 0
    }

    private let serving: ServingConfiguration
    private let streams: Bool
    private let unixSockets: Bool
    private let state = Mutex(State())
    /// Work for `run`: connections to run, streams to run.
    private let jobs: AsyncStream<@Sendable () async -> Void>
    private let jobsContinuation: AsyncStream<@Sendable () async -> Void>.Continuation

    /// - Parameters:
    ///   - streams: expert calls go over one `ComputeStream` per connection (else one unary RPC each).
    ///   - unixSockets: replicas on this host are reached through their Unix domain socket (else always TCP).
    public init(serving: ServingConfiguration, streams: Bool = true, unixSockets: Bool = true) {
        self.serving = serving
        self.streams = streams
        self.unixSockets = unixSockets
        (self.jobs, self.jobsContinuation) = AsyncStream.makeStream()
    }

    /// The replica at `endpoint`, connecting on first use: through `unixSocket` when the replica registered one on
    /// `host` and that is this process's host, else over TCP.
    public func replica(at endpoint: ServiceEndpoint, unixSocket: String = "", host: String = "") throws
        -> ExpertReplica
    {
        let connection = try self.state.withLock { state in
            if let connection = state.connections[endpoint] { return connection }
            // Under TLS, over TCP only: a certificate names hosts, not socket files.
            let local =
                self.unixSockets && self.serving.tls == nil && !unixSocket.isEmpty && host == HostIdentity.current
            let client = GRPCClient(
                transport: local
                    ? try self.serving.makeClientTransport(toUnixSocket: unixSocket)
                    : try self.serving.makeClientTransport(to: endpoint),
                interceptors: self.serving.clientInterceptors)
            let jobs = self.jobsContinuation
            let stream =
                self.streams
                ? ComputeStreamChannel(
                    client: Moemesh_V1_Expert.Client(wrapping: client), serving: self.serving, spawn: { jobs.yield($0) }
                )
                : nil
            state.opened += 1
            let connection = Connection(
                client: client, stream: stream, transport: local ? "unix \(unixSocket)" : "tcp \(endpoint)",
                id: state.opened)
            state.connections[endpoint] = connection
            if state.closed { client.beginGracefulShutdown() }
            jobs.yield { try? await client.runConnections() }
            return connection
        }
        return ExpertReplica(
            endpoint: endpoint, client: Moemesh_V1_Expert.Client(wrapping: connection.client),
            stream: connection.stream, connection: connection.id)
    }

    /// How each connected replica is reached ("tcp HOST:PORT", "unix PATH"), by registered endpoint.
    public var links: [ServiceEndpoint: String] {
        self.state.withLock { $0.connections.mapValues(\.transport) }
    }

    /// Closes the connections to endpoints not in `endpoints` (calls in flight on their streams go elsewhere).
    public func keepOnly(_ endpoints: Set<ServiceEndpoint>) {
        let dropped = self.state.withLock { state in
            let dropped = state.connections.filter { !endpoints.contains($0.key) }
            for endpoint in dropped.keys { state.connections[endpoint] = nil }
            return dropped.values
        }
        for connection in dropped {
            connection.stream?.close()
            connection.client.beginGracefulShutdown()
        }
    }

    /// Runs every connection and stream until `close` (or graceful shutdown, which closes them).
    public func run() async {
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for await job in self.jobs {
                    group.addTask { await job() }
                }
            }
        } onGracefulShutdown: {
            self.close()
        }
    }

    /// Closes every connection (unary calls in flight finish; streams end) and ends `run`.
    public func close() {
        let connections = self.state.withLock { state in
            state.closed = true
            return Array(state.connections.values)
        }
        for connection in connections {
            connection.stream?.close()
            connection.client.beginGracefulShutdown()
        }
        self.jobsContinuation.finish()
    }
}
