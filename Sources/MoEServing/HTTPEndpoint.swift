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
    /// Stops the endpoint besides graceful shutdown.
    public let stop = StopSignal()
    private let onListening: @Sendable (ServiceEndpoint) -> Void

    public init(
        host: String, port: Int, routes: Routes, logger: Logger, tls: TLSFiles? = nil,
        onListening: @escaping @Sendable (ServiceEndpoint) -> Void = { _ in }
    ) {
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
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask {
                    await stop.wait()
                    channel.channel.close(promise: nil)
                }
                try await channel.executeThenClose { connections in
                    for try await connection in connections {
                        group.addTask { await Self.serve(connection, routes: routes) }
                    }
                }
                stop.set()
            }
        } onGracefulShutdown: {
            stop.set()
        }
    }

    private static func serve(
        _ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, routes: Routes
    ) async {
        try? await connection.executeThenClose { inbound, outbound in
            var head: HTTPRequestHead? = nil
            for try await part in inbound {
                switch part {
                case .head(let requestHead): head = requestHead
                case .body: continue
                case .end:
                    guard let request = head else { continue }
                    let path = String(request.uri.prefix { $0 != "?" })
                    let response: Response
                    if request.method != .GET && request.method != .HEAD {
                        response = Response(
                            status: .methodNotAllowed, contentType: "text/plain", text: "only GET is served\n")
                    } else if let route = routes[path] {
                        response = await route()
                    } else {
                        response = Response(
                            status: .notFound, contentType: "text/plain",
                            text: "no \(path) here; paths: \(routes.keys.sorted().joined(separator: ", "))\n")
                    }
                    var headers = HTTPHeaders()
                    headers.add(name: "Content-Type", value: response.contentType)
                    headers.add(name: "Content-Length", value: String(response.body.count))
                    headers.add(name: "Cache-Control", value: "no-store")
                    try await outbound.write(
                        .head(HTTPResponseHead(version: request.version, status: response.status, headers: headers)))
                    if request.method != .HEAD {
                        try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: response.body))))
                    }
                    try await outbound.write(.end(nil))
                    if !request.isKeepAlive { return }
                }
            }
        }
    }
}
