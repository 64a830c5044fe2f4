#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
import AsyncHTTPClient
import Logging
import MoEModel
import NIOCore
import NIOHTTP1
import NIOSSL

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The Kubernetes API calls the scaler makes, and nothing more (see the RBAC in docs/operating.md):
/// - `GET   /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale` (the replicas each group starts with),
/// - `PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale` with `{"spec":{"replicas":N}}`
///   (`application/merge-patch+json`),
/// - `PATCH /api/v1/namespaces/{ns}/pods/{pod}` setting `controller.kubernetes.io/pod-deletion-cost` to −1000 on a
///   drained replica, so that scaling down removes that pod and not a busy one.
/// Every request carries `Authorization: Bearer <token>`, read from the token file each time (tokens rotate).
public struct KubernetesClient: Sendable {
    public struct Configuration: Sendable {
        /// `https://kubernetes.default.svc` in a cluster; `http://127.0.0.1:PORT` for a local test server.
        public var apiServer: String
        public var namespace: String
        public var tokenPath: String
        /// CA bundle of the API server (https); nil trusts the system's roots.
        public var caPath: String?

        public static let serviceAccountFolder = "/var/run/secrets/kubernetes.io/serviceaccount"

        public init(apiServer: String, namespace: String, tokenPath: String, caPath: String?) {
            self.apiServer = apiServer.hasSuffix("/") ? String(apiServer.dropLast()) : apiServer
            self.namespace = namespace
            self.tokenPath = tokenPath
            self.caPath = caPath
        }

        /// The pod's own service account: API server from `KUBERNETES_SERVICE_HOST`/`_PORT`, token, CA and
        /// namespace from the mounted service-account folder (namespace overridable).
        public static func inCluster(namespace: String?) throws -> Configuration {
            let folder = Self.serviceAccountFolder
            guard let host = getenv("KUBERNETES_SERVICE_HOST").map({ String(cString: $0) }) else {
                throw ScalerError(
                    "KUBERNETES_SERVICE_HOST is not set: not running in a Kubernetes pod (give --kubernetes-api)")
            }
            let port = getenv("KUBERNETES_SERVICE_PORT").map { String(cString: $0) } ?? "443"
            let resolvedNamespace: String
            if let namespace {
                resolvedNamespace = namespace
            } else {
                resolvedNamespace = try KubernetesClient.readTrimmed(folder + "/namespace", what: "the pod's namespace")
            }
            let hostPart = host.contains(":") ? "[\(host)]" : host
            return Configuration(
                apiServer: "https://\(hostPart):\(port)", namespace: resolvedNamespace, tokenPath: folder + "/token",
                caPath: folder + "/ca.crt")
        }
    }

    /// A small text file without surrounding whitespace.
    static func readTrimmed(_ path: String, what: String) throws -> String {
        let bytes: [UInt8]
        do { bytes = try FileSystem.readFile(path) } catch {
            throw ScalerError("cannot read \(what) at \(path): \(error)")
        }
        let isSpace: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }
        return String(decoding: bytes.drop(while: isSpace).reversed().drop(while: isSpace).reversed(), as: UTF8.self)
    }

    struct Scale: Codable {
        struct Spec: Codable { var replicas: Int? }
        var spec: Spec?
    }

    struct Status: Codable {
        var message: String?
        var reason: String?
    }

    public let configuration: Configuration

    public init(configuration: Configuration) { self.configuration = configuration }

    private func scalePath(_ deployment: String) -> String {
        "/apis/apps/v1/namespaces/\(self.configuration.namespace)/deployments/\(deployment)/scale"
    }

    /// `spec.replicas` of a Deployment's scale subresource.
    public func replicas(of deployment: String) async throws -> Int {
        let body = try await self.send(.GET, path: self.scalePath(deployment), body: nil)
        guard let replicas = try JSONDecoder().decode(Scale.self, from: body).spec?.replicas else {
            throw ScalerError(
                "Kubernetes API: GET \(self.scalePath(deployment)) answered a Scale without spec.replicas")
        }
        return replicas
    }

    public func setReplicas(_ replicas: Int, of deployment: String) async throws {
        _ = try await self.send(.PATCH, path: self.scalePath(deployment), body: #"{"spec":{"replicas":\#(replicas)}}"#)
    }

    /// Marks `pod` as the first to go when its Deployment scales down.
    public func preferForRemoval(pod: String) async throws {
        _ = try await self.send(
            .PATCH, path: "/api/v1/namespaces/\(self.configuration.namespace)/pods/\(pod)",
            body: #"{"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":"-1000"}}}"#)
    }

    private func send(_ method: HTTPMethod, path: String, body: String?) async throws -> Data {
        let token = try Self.readTrimmed(self.configuration.tokenPath, what: "the service-account token")
        var tls = TLSConfiguration.makeClientConfiguration()
        if let caPath = self.configuration.caPath { tls.trustRoots = .file(caPath) }
        let client = HTTPClient(
            eventLoopGroupProvider: .singleton, configuration: HTTPClient.Configuration(tlsConfiguration: tls))
        do {
            let data = try await self.send(request(method, path: path, body: body, token: token), with: client)
            try await client.shutdown()
            return data
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    private func request(_ method: HTTPMethod, path: String, body: String?, token: String) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: self.configuration.apiServer + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "Accept", value: "application/json")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/merge-patch+json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        return request
    }

    private func send(_ request: HTTPClientRequest, with client: HTTPClient) async throws -> Data {
        let (method, path) = (request.method, String(request.url.dropFirst(self.configuration.apiServer.count)))
        let response: HTTPClientResponse
        do {
            response = try await client.execute(request, timeout: .seconds(10))
        } catch {
            throw ScalerError("Kubernetes API: \(method) \(self.configuration.apiServer)\(path) failed: \(error)")
        }
        let bytes = try await response.body.collect(upTo: 1 << 20)
        let data = Data(bytes.readableBytesView)
        guard (200..<300).contains(response.status.code) else {
            let message =
                (try? JSONDecoder().decode(Status.self, from: data))?.message ?? String(decoding: data, as: UTF8.self)
            throw ScalerError("Kubernetes API: \(method) \(path) answered \(response.status): \(message)")
        }
        return data
    }
}

/// Scales expert groups through their Deployments' `scale` subresource; the Deployment controller starts and stops
/// the pods (and replaces pods that die). Each pod runs `moemesh expert --experts SELECTION --coordinator ...`.
public struct KubernetesScaler: ExpertScaler {
    /// A group and the Deployment that runs it.
    public struct Deployment: Sendable {
        public var name: String
        public var group: ScalingGroup
        /// Replicas a plan gave the group: a Deployment found with fewer at start is scaled up to them (manifests carry
        /// no `spec.replicas`, so that an apply never undoes the coordinator's scaling).
        public var plannedReplicas: Int?

        public init(name: String, group: ScalingGroup, plannedReplicas: Int? = nil) {
            self.name = name
            self.group = group
            self.plannedReplicas = plannedReplicas
        }
    }

    public let client: KubernetesClient
    public let deployments: [Deployment]
    private let logger: Logger

    public init(client: KubernetesClient, deployments: [Deployment], logger: Logger) {
        self.client = client
        self.deployments = deployments
        self.logger = logger
    }

    public var name: String { "kubernetes" }
    public var canStart: Bool { true }

    private func deployment(of group: ScalingGroup) throws -> Deployment {
        guard let deployment = self.deployments.first(where: { $0.group.name == group.name }) else {
            throw ScalerError("no Deployment runs group \(group)")
        }
        return deployment
    }

    public func initialGroups() async throws -> [(group: ScalingGroup, replicas: Int)] {
        var groups: [(group: ScalingGroup, replicas: Int)] = []
        for deployment in self.deployments {
            var replicas = try await self.client.replicas(of: deployment.name)
            if let planned = deployment.plannedReplicas, replicas < planned {
                try await self.client.setReplicas(planned, of: deployment.name)
                self.logger.info(
                    "scaled deployment to its planned replicas",
                    metadata: ["deployment": "\(deployment.name)", "from": "\(replicas)", "replicas": "\(planned)"])
                replicas = planned
            }
            groups.append((deployment.group, replicas))
        }
        return groups
    }

    public func setReplicas(_ replicas: Int, of group: ScalingGroup) async throws {
        let deployment = try self.deployment(of: group)
        try await self.client.setReplicas(replicas, of: deployment.name)
        self.logger.info(
            "scaled deployment", metadata: ["deployment": "\(deployment.name)", "replicas": "\(replicas)"])
    }

    public func retire(_ replica: RetiringReplica, leaving replicas: Int, of group: ScalingGroup) async throws {
        let deployment = try self.deployment(of: group)
        // Only a pod of this Deployment (named `<deployment>-<replica set>-<pod>`): the name comes from the replica's
        // registration, and the scaler must never mark another workload's pod.
        if replica.instance.hasPrefix(deployment.name + "-") {
            try await self.client.preferForRemoval(pod: replica.instance)
        } else if !replica.instance.isEmpty {
            self.logger.warning(
                "not marking a pod outside the deployment for removal",
                metadata: ["deployment": "\(deployment.name)", "pod": "\(replica.instance)"])
        }
        try await self.client.setReplicas(replicas, of: deployment.name)
        self.logger.info(
            "scaled deployment down",
            metadata: ["deployment": "\(deployment.name)", "replicas": "\(replicas)", "pod": "\(replica.instance)"])
    }

    public func run() async throws {}
}
