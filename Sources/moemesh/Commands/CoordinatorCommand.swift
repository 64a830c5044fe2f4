import ArgumentParser
import MoECoordinator
import MoELocalMesh
import MoEModel
import MoEProcesses
import MoEServing
import MoEStatusViews

#if canImport(Glibc)
    import Glibc
#endif

struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract:
            "Serve the coordinator (gRPC moemesh.v1.Coordinator): registry of expert replicas, topology for routers, autoscaling.",
        discussion: """
            Expert services register with it (moemesh expert --coordinator HOST:PORT) and routers follow its \
            topology (moemesh router --coordinator HOST:PORT). --scaler local starts the experts as child processes \
            (--replicas of each expert index); --scaler kubernetes scales one Deployment per expert group through the \
            scale subresource (--kubernetes-deployment NAME=SELECTION[@REPLICAS], repeated; REPLICAS: a plan's count, \
            which the coordinator scales the Deployment up to at start); --scaler none only keeps the registry.
            """)

    enum ScalerKind: String, ExpressibleByArgument, CaseIterable {
        case none, local, kubernetes
    }

    @Option(help: "Model folder (config.json + *.safetensors): the experts to coordinate.")
    var model: String

    @Option(help: "Who starts and stops replicas: none, local or kubernetes.")
    var scaler: ScalerKind = .none

    @Option(help: "Address to listen on.")
    var host: String = "127.0.0.1"

    @Option(help: "Port to listen on (0: any free port, printed in the ready line).")
    var port: Int = CoordinatorConfiguration.defaultPort

    @Option(help: "--scaler local: replicas of each expert index to start with.")
    var replicas: Int = 1

    @Option(help: "--scaler local: OpenBLAS threads per expert process.")
    var threads: Int = 1

    @Option(
        help:
            "--scaler kubernetes: a Deployment and the experts its pods host, NAME=SELECTION[@REPLICAS] (e.g. moemesh-expert-3='*:3@2': scaled to at least 2 at start); repeat for each."
    )
    var kubernetesDeployment: [String] = []

    @Option(help: "--scaler kubernetes: API server URL (default: in-cluster, from KUBERNETES_SERVICE_HOST/PORT).")
    var kubernetesApi: String?

    @Option(help: "--scaler kubernetes: namespace of the Deployments (default: the pod's own).")
    var kubernetesNamespace: String?

    @Option(help: "--scaler kubernetes: bearer token file (default: the pod's service-account token).")
    var kubernetesTokenFile: String?

    @Option(
        help: "--scaler kubernetes: CA bundle of the API server (default: the pod's service-account CA; none for http)."
    )
    var kubernetesCaFile: String?

    @Flag(
        help:
            "Beyond loopback with neither TLS nor --auth-tokens, take registrations and admin calls (Register, DrainReplica, SetPruned, ApplyPlan, …) from any host. Without it the coordinator is in protected mode: it takes them only from its own host, and refuses other hosts PERMISSION_DENIED."
    )
    var insecure = false

    @Option(help: .hidden)
    var parentPid: Int32?

    @OptionGroup var autoscaling: AutoscaleOptions
    @OptionGroup var auth: ServiceAuthOptions
    @OptionGroup var limits: ConnectionLimitOptions
    @OptionGroup var tls: TLSOptions
    @OptionGroup var http: HTTPOptions
    @OptionGroup var logging: LoggingOptions

    private var listening: ServingConfiguration {
        var serving = ServingConfiguration(host: self.host, port: self.port)
        serving.insecure = self.insecure
        return serving
    }

    func run() async throws {
        let logger = try self.logging.bootstrap(label: "moemesh.coordinator")
        let checkpoint = try MoECheckpoint(path: self.model)
        let scaler: CoordinatorConfiguration.Scaler
        var groups = ScalingGroup.perExpertIndex(layers: checkpoint.layers).count
        switch self.scaler {
        case .none:
            scaler = .none
        case .local:
            guard self.replicas >= 0 else {
                throw ValidationError("--replicas: expected 0 or more, got \(self.replicas)")
            }
            scaler = .local(
                replicas: self.replicas, threads: self.threads, executable: ChildProcess.currentExecutable,
                extraArguments: ["--log-level", self.logging.logLevel] + self.auth.replicaArguments
                    + self.tls.replicaArguments)
        case .kubernetes:
            let deployments = try self.kubernetesDeployment.map(Self.kubernetesDeployment)
            guard !deployments.isEmpty else {
                throw ValidationError("--scaler kubernetes needs at least one --kubernetes-deployment NAME=SELECTION")
            }
            groups = deployments.count
            var client =
                try self.kubernetesApi.map {
                    KubernetesClient.Configuration(
                        apiServer: $0, namespace: self.kubernetesNamespace ?? "default",
                        tokenPath: KubernetesClient.Configuration.serviceAccountFolder + "/token",
                        caPath: $0.hasPrefix("https:")
                            ? KubernetesClient.Configuration.serviceAccountFolder + "/ca.crt" : nil)
                } ?? KubernetesClient.Configuration.inCluster(namespace: self.kubernetesNamespace)
            if let token = self.kubernetesTokenFile { client.tokenPath = token }
            if let ca = self.kubernetesCaFile { client.caPath = ca }
            scaler = .kubernetes(client, deployments: deployments)
        }
        let configuration = CoordinatorConfiguration(
            modelPath: self.model, scaler: scaler, settings: try self.autoscaling.settings(groups: groups),
            serving: try self.tls.appliedToService(
                self.auth.applied(to: self.limits.applied(to: self.listening))),
            httpPort: self.http.httpPort)
        if configuration.settings.autoscale != nil, case .none = scaler {
            throw ValidationError("--autoscale needs a scaler that can start replicas (--scaler local or kubernetes)")
        }
        configuration.serving.warnIfPlaintextBeyondLoopback(logger)
        configuration.serving.reportProtectedMode(logger)
        self.http.bootstrapMetrics()
        let services = try buildCoordinatorServices(
            configuration: configuration,
            httpRoutes: { coordinator in StatusPage.routes(status: { await coordinator.status() }) }, logger: logger)
        let tracing =
            try Observability.tracingService(serviceName: "moemesh-coordinator", logger: logger).map { [$0] } ?? []
        try await runServiceGroup(services: tracing + services, parentPID: self.parentPid, logger: logger)
    }

    /// `NAME=SELECTION` or `NAME=SELECTION@REPLICAS` (a plan's count: the coordinator scales the Deployment up to it
    /// at start).
    static func kubernetesDeployment(_ entry: String) throws -> (name: String, selection: String, plannedReplicas: Int?)
    {
        let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw ValidationError("--kubernetes-deployment: expected NAME=SELECTION[@REPLICAS], got '\(entry)'")
        }
        guard let at = parts[1].lastIndex(of: "@") else { return (parts[0], parts[1], nil) }
        let selection = String(parts[1][..<at]), count = parts[1][parts[1].index(after: at)...]
        guard !selection.isEmpty, let replicas = Int(count), replicas >= 0 else {
            throw ValidationError(
                "--kubernetes-deployment: expected NAME=SELECTION@REPLICAS with REPLICAS a count of 0 or more, got '\(entry)'"
            )
        }
        return (parts[0], selection, replicas)
    }
}
