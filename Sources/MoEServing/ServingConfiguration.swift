import GRPCCore
import GRPCNIOTransportHTTP2

/// Listening address and transport settings shared by every MoEMesh service.
///
/// Keys (flags of every service): `--host` (default 127.0.0.1), `--port` (0 = any free port),
/// `--max-message-mib` (largest request or response, default 256 MiB).
public struct ServingConfiguration: Sendable, Equatable {
    public var host: String
    public var port: Int
    /// Largest message accepted or sent, in bytes. A prefill batch of 2,048 tokens × 4,096 × f32 is 32 MiB.
    public var maxMessageBytes: Int

    public init(host: String = "127.0.0.1", port: Int = 0, maxMessageBytes: Int = 256 << 20) {
        self.host = host
        self.port = port
        self.maxMessageBytes = maxMessageBytes
    }

    /// Keepalive pings on every connection, with calls or without: a peer that stops answering (a hung process, a
    /// cut link, which send no reset) is found within `time + timeout` and its connection closed.
    public static let keepaliveTime: Duration = .seconds(10)
    public static let keepaliveTimeout: Duration = .seconds(5)

    /// HTTP/2 settings chosen on measurements (shared/FACTS.md): no flush coalescing (it adds ~300 µs per
    /// call at low load), an 8 MiB window (the 64 KiB default makes 1 MiB messages 5× slower), and a payload
    /// limit that fits large prefill batches; keepalive pings allowed from clients every 5 s.
    public var serverTransportConfig: HTTP2ServerTransport.Posix.Config {
        var config = HTTP2ServerTransport.Posix.Config.defaults
        config.connection.flushCoalescing = nil
        config.connection.keepalive = .init(
            time: Self.keepaliveTime, timeout: Self.keepaliveTimeout,
            clientBehavior: .init(minPingIntervalWithoutCalls: .seconds(5), allowWithoutCalls: true))
        config.http2.targetWindowSize = 8 << 20
        config.rpc.maxRequestPayloadSize = self.maxMessageBytes
        return config
    }

    /// The client side of the same settings.
    public var clientTransportConfig: HTTP2ClientTransport.Posix.Config {
        var config = HTTP2ClientTransport.Posix.Config.defaults
        config.connection.flushCoalescing = nil
        config.connection.keepalive = .init(
            time: Self.keepaliveTime, timeout: Self.keepaliveTimeout, allowWithoutCalls: true)
        config.http2.targetWindowSize = 8 << 20
        return config
    }

    /// Call options allowing messages up to `maxMessageBytes` both ways, with an optional timeout.
    public func callOptions(timeout: Duration? = nil) -> CallOptions {
        var options = CallOptions.defaults
        options.maxRequestMessageBytes = self.maxMessageBytes
        options.maxResponseMessageBytes = self.maxMessageBytes
        options.timeout = timeout
        return options
    }

    /// Options for calls to the coordinator (heartbeats, topology, demand): they fail at once while it is
    /// unreachable, instead of waiting for a connection, so that the caller retries on its own schedule.
    public func coordinatorCallOptions(timeout: Duration? = nil) -> CallOptions {
        var options = self.callOptions(timeout: timeout)
        options.waitForReady = false
        return options
    }

    public func makeServerTransport() -> HTTP2ServerTransport.Posix {
        HTTP2ServerTransport.Posix(
            address: .ipv4(host: self.host, port: self.port), transportSecurity: .plaintext,
            config: self.serverTransportConfig)
    }

    /// A server transport on the Unix domain socket at `path` (a stale socket file there is replaced), with the
    /// same settings as the TCP one.
    public func makeServerTransport(unixSocket path: String) -> HTTP2ServerTransport.Posix {
        HTTP2ServerTransport.Posix(
            address: .unixDomainSocket(path: path), transportSecurity: .plaintext, config: self.serverTransportConfig)
    }

    /// A plaintext HTTP/2 client transport to the Unix domain socket at `path`.
    public func makeClientTransport(toUnixSocket path: String) throws -> HTTP2ClientTransport.Posix {
        try HTTP2ClientTransport.Posix(
            target: .unixDomainSocket(path: path), transportSecurity: .plaintext, config: self.clientTransportConfig)
    }

    /// A plaintext HTTP/2 client transport to `endpoint`.
    public func makeClientTransport(to endpoint: ServiceEndpoint) throws -> HTTP2ClientTransport.Posix {
        try HTTP2ClientTransport.Posix(
            target: .dns(host: endpoint.host, port: endpoint.port), transportSecurity: .plaintext,
            config: self.clientTransportConfig)
    }
}
