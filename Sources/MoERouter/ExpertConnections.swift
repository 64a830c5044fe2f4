import MoECore
import GRPCCore
import MoEDataPlane
import MoEProto
import MoEServing
import ServiceLifecycle
import Synchronization

/// One data-plane channel (gRPC's C++ core) per expert endpoint, opened when a topology first names it and closed
/// when a topology no longer does (calls in flight finish); over each, with `streams`, one long-lived
/// `ComputeStream` for the expert calls. A replica on this host that listens on a Unix domain socket too (its
/// registration says which host, see `HostIdentity`) is reached through the socket: no TCP/IP stack, no loopback
/// checksums.
public final class ExpertConnections: Sendable {
    private struct Connection {
        let channel: DataPlaneChannel
        let stream: ComputeStreamChannel?
        /// "tcp HOST:PORT" or "unix PATH".
        let transport: String
        let id: UInt64
    }

    private struct State {
        var connections: [ServiceEndpoint: Connection] = [:]
        var opened: UInt64 = 0
    }

    private let serving: ServingConfiguration
    private let channelConfiguration: DataPlaneChannel.Configuration
    /// What every call carries: the bearer token, when this process has one.
    private let metadata: Metadata
    private let streams: Bool
    private let unixSockets: Bool
    private let state = Mutex(State())
    /// Ends `run` at `close`.
    private let closed: AsyncStream<Void>
    private let closing: AsyncStream<Void>.Continuation

    /// - Parameters:
    ///   - streams: expert calls go over one `ComputeStream` per connection (else one unary RPC each).
    ///   - unixSockets: replicas on this host are reached through their Unix domain socket (else always TCP).
    public init(serving: ServingConfiguration, streams: Bool = true, unixSockets: Bool = true) throws {
        self.serving = serving
        self.channelConfiguration = try serving.dataPlaneChannelConfiguration()
        var metadata = Metadata()
        if let token = serving.token { metadata.addString("Bearer \(token)", forKey: "authorization") }
        self.metadata = metadata
        self.streams = streams
        self.unixSockets = unixSockets
        (self.closed, self.closing) = AsyncStream.makeStream()
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
            let channel = try DataPlaneChannel(
                target: local ? "unix:\(unixSocket)" : endpoint.description, configuration: self.channelConfiguration)
            let stream = self.streams ? ComputeStreamChannel(channel: channel, metadata: self.metadata) : nil
            state.opened += 1
            let connection = Connection(
                channel: channel, stream: stream, transport: local ? "unix \(unixSocket)" : "tcp \(endpoint)",
                id: state.opened)
            state.connections[endpoint] = connection
            return connection
        }
        return ExpertReplica(
            endpoint: endpoint, channel: connection.channel, metadata: self.metadata, stream: connection.stream,
            connection: connection.id)
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
        for connection in dropped { connection.stream?.close() }
    }

    /// Runs until `close` (or graceful shutdown, which closes every connection).
    public func run() async {
        await withGracefulShutdownHandler {
            for await _ in self.closed {}
        } onGracefulShutdown: {
            self.close()
        }
    }

    /// Closes every connection (unary calls in flight finish; streams end) and ends `run`.
    public func close() {
        let connections = self.state.withLock { state in
            defer { state.connections = [:] }
            return Array(state.connections.values)
        }
        for connection in connections { connection.stream?.close() }
        self.closing.finish()
    }
}
