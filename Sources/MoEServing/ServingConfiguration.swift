import MoECore
import GRPCCore
import GRPCNIOTransportHTTP2

/// Listening address and transport settings shared by every MoEMesh service.
///
/// Keys (flags of every service): `--host` (default 127.0.0.1), `--port` (0 = any free port),
/// `--max-message-mib` (largest request or response, default 256 MiB), `--max-concurrent-calls` (per connection).
public struct ServingConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// Largest message accepted or sent, in bytes. A prefill batch of 2,048 tokens × 4,096 × f32 is 32 MiB.
    public var maxMessageBytes: Int
    /// Bearer tokens this service's servers accept (`--auth-tokens`); nil: no authentication.
    public var acceptedTokens: AuthTokens?
    /// The bearer token this process sends on its own calls (`--token-file`, `MOEMESH_TOKEN`); nil: none.
    public var token: String?
    /// TLS for this process's servers and clients; nil: plaintext.
    public var tls: TLSFiles?
    /// Calls one client connection may have open at once (`--max-concurrent-calls`). On the data plane (routers,
    /// experts) a call beyond it is refused RESOURCE_EXHAUSTED at once, the connection's other calls untouched; the
    /// coordinator (grpc-swift) advertises it as HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS and disconnects a client
    /// that opens more (GOAWAY PROTOCOL_ERROR).
    public var maxConcurrentCallsPerConnection = Self.defaultMaxConcurrentCallsPerConnection
    /// Routers and experts refuse calls that cannot meet their deadline, and keep the request bytes of calls in
    /// flight within `loadShedding.maxInFlightBytes` (`--max-inflight-mib`): see `LoadShedder`.
    public var loadShedding = LoadShedder.Configuration()
    /// `--insecure`: beyond loopback with neither TLS nor tokens, take registrations and admin calls from any host
    /// anyway (protected mode off; see `ProtectedModeInterceptor`).
    public var insecure = false
    /// On SIGTERM, how long calls in flight get to finish before they are answered UNAVAILABLE.
    public var drainTimeout: Duration = .seconds(10)
    /// A client's connection is closed gracefully (GOAWAY; its calls finish) after this age, so that long-lived
    /// clients spread over servers added later; nil: never.
    public var maxConnectionAge: Duration?
    /// Far above what the router's batched fan-out opens on one expert connection (one call per chosen expert per
    /// batch), low enough that one connection cannot make a server hold unbounded calls.
    public static let defaultMaxConcurrentCallsPerConnection = 1024

    public init(
        host: String = "127.0.0.1", port: Int = 0, maxMessageBytes: Int = 256 << 20, acceptedTokens: AuthTokens? = nil,
        token: String? = nil, tls: TLSFiles? = nil, maxConnectionAge: Duration? = nil
    ) {
        self.tls = tls
        self.maxConnectionAge = maxConnectionAge
        self.host = host
        self.port = port
        self.maxMessageBytes = maxMessageBytes
        self.acceptedTokens = acceptedTokens
        self.token = token
    }

    /// Interceptors every server of this process puts first: the token check, when tokens are configured.
    public var authInterceptors: [any ServerInterceptor] {
        self.acceptedTokens.map { [AuthServerInterceptor(tokens: $0)] } ?? []
    }

    /// Interceptors of every client this process opens: its bearer token, when it has one.
    public var clientInterceptors: [any ClientInterceptor] {
        self.token.map { [BearerTokenClientInterceptor(token: $0)] } ?? []
    }

    /// A client to `endpoint` with this configuration's transport settings and token (not yet running).
    public func makeClient(to endpoint: ServiceEndpoint) throws -> GRPCClient<HTTP2ClientTransport.Posix> {
        GRPCClient(transport: try self.makeClientTransport(to: endpoint), interceptors: self.clientInterceptors)
    }

    /// Runs `body` with a client to `endpoint` (`withGRPCClient`), with this configuration's settings and token.
    public func withClient<Result: Sendable>(
        to endpoint: ServiceEndpoint, _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Result
    ) async throws -> Result {
        try await withGRPCClient(
            transport: try self.makeClientTransport(to: endpoint), interceptors: self.clientInterceptors,
            handleClient: body)
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
        config.http2.maxConcurrentStreams = self.maxConcurrentCallsPerConnection
        // Twice the services' own limit (`PayloadLimit`): the transport resets a stream whose message is over its
        // limit without a status, where the service answers RESOURCE_EXHAUSTED naming the limit.
        config.rpc.maxRequestPayloadSize = min(self.maxMessageBytes * 2, Int(UInt32.max))
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
            address: .ipv4(host: self.host, port: self.port),
            transportSecurity: self.tls?.serverSecurity ?? .plaintext, config: self.serverTransportConfig)
    }

    /// A server transport on the Unix domain socket at `path` (a stale socket file there is replaced), with the
    /// same settings as the TCP one.
    public func makeServerTransport(unixSocket path: String) -> HTTP2ServerTransport.Posix {
        HTTP2ServerTransport.Posix(
            address: .unixDomainSocket(path: path), transportSecurity: self.tls?.serverSecurity ?? .plaintext,
            config: self.serverTransportConfig)
    }

    /// A plaintext HTTP/2 client transport to the Unix domain socket at `path`.
    public func makeClientTransport(toUnixSocket path: String) throws -> HTTP2ClientTransport.Posix {
        try HTTP2ClientTransport.Posix(
            target: .unixDomainSocket(path: path), transportSecurity: .plaintext, config: self.clientTransportConfig)
    }

    /// An HTTP/2 client transport to `endpoint` (TLS when configured).
    public func makeClientTransport(to endpoint: ServiceEndpoint) throws -> HTTP2ClientTransport.Posix {
        // An IP address dialled as such: TLS then sends no SNI (an IP may not be one) and checks the address
        // against the certificate's IP names — unless a server name is given: it is then the authority, the SNI
        // and the name checked.
        var config = self.clientTransportConfig
        if let name = self.tls?.serverName { config.http2.authority = name }
        return try HTTP2ClientTransport.Posix(
            target: ServiceEndpoint.ipv4Bytes(endpoint.host) != nil
                ? .ipv4(host: endpoint.host, port: endpoint.port) : .dns(host: endpoint.host, port: endpoint.port),
            transportSecurity: self.tls?.clientSecurity ?? .plaintext, config: config)
    }
}
