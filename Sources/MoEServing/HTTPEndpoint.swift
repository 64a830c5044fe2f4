import Logging
import MoECore
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

/// A small HTTP/1.1 server for what operators fetch with plain HTTP: `/metrics` (Prometheus text), and the
/// coordinator's status page and JSON. GET only; each route answers a whole body at once. With `tls` it serves
/// HTTPS with the service's own certificate and, when the files name a CA, requires client certificates it signed
/// (as the gRPC server does).
///
/// Bounded against slow and idle clients: a connection must complete each request (head and body) within
/// `limits.requestTimeout` of opening or of its previous answer, else it is closed (an idle connection, a header sent
/// at a byte a second); a request body beyond `limits.maxBodyBytes` is answered 413 and the connection closed; past
/// `limits.maxConnections` open connections a new one is closed at once (logged), so descriptors stay bounded.
public struct HTTPEndpoint: Service {
    public struct Response: Sendable {
        public var status: HTTPResponseStatus
        public var contentType: String
        public var body: [UInt8]

        public init(status: HTTPResponseStatus = .ok, contentType: String, body: [UInt8]) {
            self.status = status
            self.contentType = contentType
            self.body = body
        }

        public init(status: HTTPResponseStatus = .ok, contentType: String, text: String) {
            self.init(status: status, contentType: contentType, body: Array(text.utf8))
        }
    }

    /// Path (without query) → answer.
    public typealias Routes = [String: @Sendable () async -> Response]

    public let host: String
    public let port: Int
    public let routes: Routes
    public let logger: Logger
    public let tls: TLSFiles?
    public let limits: Limits
    /// Stops the endpoint besides graceful shutdown.
    public let stop = StopSignal()
    private let onListening: @Sendable (ServiceEndpoint) -> Void

    public struct Limits: Sendable {
        /// Time to send a whole request, from the connection's opening or its previous answer.
        public var requestTimeout: Duration = .seconds(10)
        public var maxBodyBytes = 64 << 10
        public var maxConnections = 256

        public init() {}
    }

    public init(
        host: String, port: Int, routes: Routes, logger: Logger, tls: TLSFiles? = nil, limits: Limits = Limits(),
        onListening: @escaping @Sendable (ServiceEndpoint) -> Void = { _ in }
    ) {
        self.limits = limits
        self.tls = tls
        self.host = host
        self.port = port
        self.routes = routes
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        let routes = self.routes
        let sslContext = try self.tls.map { try $0.httpServerContext() }
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: self.host, port: self.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                    }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
                        wrappingChannelSynchronously: channel)
                }
            }
        let endpoint = ServiceEndpoint(host: self.host, port: channel.channel.localAddress?.port ?? self.port)
        self.logger.info(
            "http serving",
            metadata: [
                "address": "\(endpoint)", "tls": "\(sslContext != nil)",
                "paths": "\(routes.keys.sorted().joined(separator: " "))",
            ])
        self.onListening(endpoint)
        let stop = self.stop
        let (limits, logger) = (self.limits, self.logger)
        let open = OpenConnections()
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask {
                    await stop.wait()
                    channel.channel.close(promise: nil)
                }
                try await channel.executeThenClose { connections in
                    for try await connection in connections {
                        guard open.enter(limit: limits.maxConnections) else {
                            // Closed through the async channel, whose reader and writer must be finished.
                            group.addTask { try? await connection.executeThenClose { _, _ in } }
                            logger.warning(
                                "http connection refused: too many open",
                                metadata: ["limit": "\(limits.maxConnections)"])
                            continue
                        }
                        group.addTask {
                            await Self.serve(connection, routes: routes, limits: limits)
                            open.leave()
                        }
                    }
                }
                stop.set()
            }
        } onGracefulShutdown: {
            stop.set()
        }
    }

    private static func serve(
        _ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, routes: Routes, limits: Limits
    ) async {
        let channel = connection.channel
        let timeout = TimeAmount.nanoseconds(Int64(limits.requestTimeout.seconds * 1e9))
        // Closes the connection unless a whole request arrives in time; re-armed after each answer.
        var deadline = channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
        defer { deadline.cancel() }
        try? await connection.executeThenClose { inbound, outbound in
            var head: HTTPRequestHead? = nil
            var bodyBytes = 0
            for try await part in inbound {
                switch part {
                case .head(let requestHead):
                    head = requestHead
                    bodyBytes = 0
                case .body(let chunk):
                    bodyBytes += chunk.readableBytes
                    if bodyBytes > limits.maxBodyBytes, let request = head {
                        try await Self.write(
                            Response(
                                status: .payloadTooLarge, contentType: "text/plain",
                                text: "a request body of at most \(limits.maxBodyBytes) bytes is read here\n"),
                            to: outbound, for: request)
                        return
                    }
                case .end:
                    deadline.cancel()
                    guard let request = head else { continue }
                    let path = String(request.uri.prefix { $0 != "?" })
                    let response: Response
                    if request.method != .GET && request.method != .HEAD {
                        response = Response(
                            status: .methodNotAllowed, contentType: "text/plain", text: "only GET is served\n")
                    } else if let route = routes[path] {
                        response = await route()
                    } else {
                        let shown = String(path.unicodeScalars.prefix(100).filter { $0.isASCII && $0.value >= 0x20 })
                        response = Response(
                            status: .notFound, contentType: "text/plain",
                            text: "no \(shown) here; paths: \(routes.keys.sorted().joined(separator: ", "))\n")
                    }
                    try await Self.write(response, to: outbound, for: request)
                    if !request.isKeepAlive { return }
                    deadline = channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
                }
            }
        }
    }

    /// The status page's script and styles are inline and it fetches only its own JSON: nothing else may load.
    static let contentSecurityPolicy =
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
        + "connect-src 'self'; frame-ancestors 'none'"

    private static func write(
        _ response: Response, to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>,
        for request: HTTPRequestHead
    ) async throws {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(response.body.count))
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "X-Content-Type-Options", value: "nosniff")
        headers.add(name: "Content-Security-Policy", value: Self.contentSecurityPolicy)
        headers.add(name: "Referrer-Policy", value: "no-referrer")
        try await outbound.write(
            .head(HTTPResponseHead(version: request.version, status: response.status, headers: headers)))
        if request.method != .HEAD {
            try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: response.body))))
        }
        try await outbound.write(.end(nil))
    }
}

/// The connections an endpoint has open, against its limit.
private final class OpenConnections: Sendable {
    private let count = Atomic<Int>(0)

    /// Counts one more, or refuses (false) when `limit` are open.
    func enter(limit: Int) -> Bool {
        guard self.count.add(1, ordering: .relaxed).newValue <= limit else {
            self.count.subtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    func leave() { self.count.subtract(1, ordering: .relaxed) }
}
