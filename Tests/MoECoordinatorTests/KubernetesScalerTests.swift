import Logging
import MoECoordinator
import MoECore
import MoEModel
import MoETestSupport
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing

/// A stand-in for the Kubernetes API server: the scale subresource of Deployments and pod patches, recording
/// every request (method, path, bearer token, content type, body).
final class FakeKubernetesAPI: Sendable {
    struct Request: Sendable, Equatable {
        var method: String
        var path: String
        var authorization: String?
        var contentType: String?
        var body: String
    }

    let requests = Mutex<[Request]>([])
    /// Deployment name → spec.replicas.
    let replicas = Mutex<[String: Int]>([:])
    let token: String
    let namespace: String

    init(token: String, namespace: String, deployments: [String: Int]) {
        self.token = token
        self.namespace = namespace
        self.replicas.withLock { $0 = deployments }
    }

    /// The answer to one request: status and JSON body.
    func answer(_ request: Request) -> (HTTPResponseStatus, String) {
        self.requests.withLock { $0.append(request) }
        guard request.authorization == "Bearer \(self.token)" else {
            return (.unauthorized, #"{"kind":"Status","message":"Unauthorized","reason":"Unauthorized"}"#)
        }
        let scalePrefix = "/apis/apps/v1/namespaces/\(self.namespace)/deployments/"
        if request.path.hasPrefix(scalePrefix), request.path.hasSuffix("/scale") {
            let name = String(request.path.dropFirst(scalePrefix.count).dropLast("/scale".count))
            guard self.replicas.withLock({ $0[name] }) != nil else {
                return (.notFound, #"{"kind":"Status","message":"deployments.apps \"\#(name)\" not found"}"#)
            }
            if request.method == "PATCH" {
                guard request.contentType == "application/merge-patch+json",
                    let match = request.body.firstMatch(of: /^\{"spec":\{"replicas":(\d+)\}\}$/),
                    let value = Int(match.1)
                else { return (.unsupportedMediaType, #"{"kind":"Status","message":"bad patch"}"#) }
                self.replicas.withLock { $0[name] = value }
            } else if request.method != "GET" {
                return (.methodNotAllowed, #"{"kind":"Status","message":"method not allowed"}"#)
            }
            let value = self.replicas.withLock { $0[name]! }
            return (
                .ok,
                #"{"kind":"Scale","apiVersion":"autoscaling/v1","metadata":{"name":"\#(name)"},"spec":{"replicas":\#(value)},"status":{"replicas":\#(value)}}"#
            )
        }
        if request.path.hasPrefix("/api/v1/namespaces/\(self.namespace)/pods/"), request.method == "PATCH" {
            return (.ok, #"{"kind":"Pod"}"#)
        }
        return (.forbidden, #"{"kind":"Status","message":"forbidden: \#(request.method) \#(request.path)"}"#)
    }

    /// Serves on 127.0.0.1 (any port) while `body` runs.
    func serve(_ body: (Int) async throws -> Void) async throws {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(Handler(api: self))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { channel.close(promise: nil) }
        try await body(channel.localAddress!.port!)
    }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let api: FakeKubernetesAPI
        var head: HTTPRequestHead?
        var body = ""

        init(api: FakeKubernetesAPI) { self.api = api }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch self.unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                self.body = ""
            case .body(let buffer):
                self.body += String(buffer: buffer)
            case .end:
                guard let head = self.head else { return }
                let (status, text) = self.api.answer(
                    Request(
                        method: head.method.rawValue, path: head.uri,
                        authorization: head.headers.first(name: "Authorization"),
                        contentType: head.headers.first(name: "Content-Type"), body: self.body))
                var headers = HTTPHeaders()
                headers.add(name: "Content-Type", value: "application/json")
                headers.add(name: "Content-Length", value: String(text.utf8.count))
                context.write(
                    self.wrapOutboundOut(
                        .head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
                context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
                context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}

@Suite("Kubernetes scaler against a local API server")
struct KubernetesScalerTests {
    static func scaler(port: Int, tokenFile: String, groups: [ScalingGroup]) -> KubernetesScaler {
        KubernetesScaler(
            client: KubernetesClient(
                configuration: .init(
                    apiServer: "http://127.0.0.1:\(port)", namespace: "mesh", tokenPath: tokenFile, caPath: nil)),
            deployments: groups.enumerated().map { .init(name: "moemesh-expert-\($0.offset)", group: $0.element) },
            logger: Logger(label: "test"))
    }

    static let groups =
        ScalingGroup.perExpertIndex(layers: [])
        + [
            ScalingGroup(name: "*:0", selection: "*:0", experts: [ExpertAddress(layer: "0", expert: 0)]),
            ScalingGroup(name: "*:1", selection: "*:1", experts: [ExpertAddress(layer: "0", expert: 1)]),
        ]

    @Test("reads and patches the scale subresource with the bearer token; marks the drained pod first to go")
    func scalesDeployments() async throws {
        let folder = TemporaryDirectory()
        defer { folder.remove() }
        try FileSystem.writeFile(folder.file("token"), chunks: [Array("secret-token\n".utf8)])
        let api = FakeKubernetesAPI(
            token: "secret-token", namespace: "mesh", deployments: ["moemesh-expert-0": 2, "moemesh-expert-1": 1])
        try await api.serve { port in
            let scaler = Self.scaler(port: port, tokenFile: folder.file("token"), groups: Self.groups)
            let initial = try await scaler.initialGroups()
            #expect(initial.map(\.group.name) == ["*:0", "*:1"])
            #expect(initial.map(\.replicas) == [2, 1])
            try await scaler.setReplicas(3, of: Self.groups[1])
            try await scaler.retire(
                RetiringReplica(endpoint: "10.0.0.7:7000", instance: "moemesh-expert-0-abc"), leaving: 1,
                of: Self.groups[0])
        }
        let requests = api.requests.withLock { $0 }
        #expect(
            requests.map { "\($0.method) \($0.path)" } == [
                "GET /apis/apps/v1/namespaces/mesh/deployments/moemesh-expert-0/scale",
                "GET /apis/apps/v1/namespaces/mesh/deployments/moemesh-expert-1/scale",
                "PATCH /apis/apps/v1/namespaces/mesh/deployments/moemesh-expert-1/scale",
                "PATCH /api/v1/namespaces/mesh/pods/moemesh-expert-0-abc",
                "PATCH /apis/apps/v1/namespaces/mesh/deployments/moemesh-expert-0/scale",
            ])
        #expect(requests.allSatisfy { $0.authorization == "Bearer secret-token" })
        #expect(requests[2].body == #"{"spec":{"replicas":3}}"#)
        #expect(requests[2].contentType == "application/merge-patch+json")
        #expect(
            requests[3].body == #"{"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":"-1000"}}}"#)
        #expect(requests[4].body == #"{"spec":{"replicas":1}}"#)
        #expect(api.replicas.withLock { $0 } == ["moemesh-expert-0": 1, "moemesh-expert-1": 3])
    }

    @Test("at start a Deployment below its planned replicas is scaled up to them; one at or above is left alone")
    func scalesUpToPlannedReplicas() async throws {
        let folder = TemporaryDirectory()
        defer { folder.remove() }
        try FileSystem.writeFile(folder.file("token"), chunks: [Array("secret-token\n".utf8)])
        let api = FakeKubernetesAPI(
            token: "secret-token", namespace: "mesh", deployments: ["moemesh-expert-0": 1, "moemesh-expert-1": 4])
        try await api.serve { port in
            let scaler = KubernetesScaler(
                client: KubernetesClient(
                    configuration: .init(
                        apiServer: "http://127.0.0.1:\(port)", namespace: "mesh", tokenPath: folder.file("token"),
                        caPath: nil)),
                deployments: [
                    .init(name: "moemesh-expert-0", group: Self.groups[0], plannedReplicas: 3),
                    .init(name: "moemesh-expert-1", group: Self.groups[1], plannedReplicas: 2),
                ],
                logger: Logger(label: "test"))
            let initial = try await scaler.initialGroups()
            #expect(initial.map(\.replicas) == [3, 4])
        }
        let requests = api.requests.withLock { $0 }
        #expect(
            requests.map { "\($0.method) \($0.path)" } == [
                "GET /apis/apps/v1/namespaces/mesh/deployments/moemesh-expert-0/scale",
                "PATCH /apis/apps/v1/namespaces/mesh/deployments/moemesh-expert-0/scale",
                "GET /apis/apps/v1/namespaces/mesh/deployments/moemesh-expert-1/scale",
            ])
        #expect(api.replicas.withLock { $0 } == ["moemesh-expert-0": 3, "moemesh-expert-1": 4])
    }

    @Test("a retiring replica whose registered pod is not one of the Deployment's is scaled down without marking it")
    func marksOnlyItsOwnPods() async throws {
        let folder = TemporaryDirectory()
        defer { folder.remove() }
        try FileSystem.writeFile(folder.file("token"), chunks: [Array("secret-token\n".utf8)])
        let api = FakeKubernetesAPI(token: "secret-token", namespace: "mesh", deployments: ["moemesh-expert-0": 2])
        try await api.serve { port in
            let scaler = Self.scaler(port: port, tokenFile: folder.file("token"), groups: Self.groups)
            for pod in ["kube-apiserver-node1", "moemesh-expert-01-abc"] {
                try await scaler.retire(
                    RetiringReplica(endpoint: "10.0.0.7:7000", instance: pod), leaving: 1, of: Self.groups[0])
            }
        }
        let requests = api.requests.withLock { $0 }
        #expect(requests.allSatisfy { !$0.path.contains("/pods/") })
        #expect(requests.count == 2 && api.replicas.withLock { $0 } == ["moemesh-expert-0": 1])
    }

    @Test("API errors come back with the status and the server's message")
    func reportsErrors() async throws {
        let folder = TemporaryDirectory()
        defer { folder.remove() }
        try FileSystem.writeFile(folder.file("token"), chunks: [Array("wrong".utf8)])
        let api = FakeKubernetesAPI(token: "secret-token", namespace: "mesh", deployments: ["moemesh-expert-0": 1])
        try await api.serve { port in
            let scaler = Self.scaler(port: port, tokenFile: folder.file("token"), groups: Self.groups)
            do {
                try await scaler.setReplicas(2, of: Self.groups[0])
                Issue.record("expected an error")
            } catch {
                #expect(
                    "\(error)"
                        == "Kubernetes API: PATCH /apis/apps/v1/namespaces/mesh/deployments/moemesh-expert-0/scale answered 401 Unauthorized: Unauthorized"
                )
            }
            let missing = Self.scaler(port: port, tokenFile: folder.file("absent"), groups: Self.groups)
            await #expect(throws: ScalerError.self) { try await missing.setReplicas(2, of: Self.groups[0]) }
        }
    }
}
