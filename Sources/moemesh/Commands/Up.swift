import ArgumentParser
import Logging
import MoECoordinator
import MoEKernels
import MoELocalMesh
import MoEModel
import MoEProcesses
import MoEServing

#if canImport(Glibc)
    import Glibc
#endif

struct Up: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract:
            "Start a whole mesh on this machine: a coordinator, expert processes (one per expert index, and per shared expert, times --replicas) and a router.",
        discussion: """
            With no --model, serves a small demo model (Mixtral layout, 2 layers × 8 experts, H=512), \
            synthesised once into the cache folder. The coordinator runs in this process and starts the \
            experts as child processes (replacing any that die); the router follows its topology. Prints \
            'router listening on HOST:PORT' once every process serves; Ctrl-C stops them all.
            """)

    @Option(help: "Model folder to serve (default: the demo model).")
    var model: String?

    @Option(help: "Address every process listens on.")
    var host: String = "127.0.0.1"

    @Option(help: "The router's port (0: any free port).")
    var port: Int = 50051

    @Option(help: "Processes per expert (the router spreads calls over them and retries on another if one fails).")
    var replicas: Int = 1

    @Option(help: "The coordinator's port (0: any free port).")
    var coordinatorPort: Int = CoordinatorConfiguration.defaultPort

    @OptionGroup var autoscaling: AutoscaleOptions

    @Option(help: "OpenBLAS threads per expert process (default: cores ÷ experts per token, at least 1).")
    var threads: Int?

    @Option(
        help:
            "Consecutive expert indices one expert process hosts, in every layer (4: experts 0-3, 4-7, … in 8 processes for 32 experts; 1: a process per index)."
    )
    var expertsPerProcess: Int = 1

    @Option(
        help: "Where the expert processes run their kernels: cpu, cuda or cuda:N (passed to each `moemesh expert`).")
    var device: String = "cpu"

    @Option(
        help:
            "How the experts' weights are stored (passed to each `moemesh expert`): f32, bf16 or int8 (cpu), bf16, int8 or fp8 (cuda), or per LAYER:EXPERTS item, e.g. '*:*=int8,0:3=bf16' (default: the device's)."
    )
    var precision: String?

    @Option(help: "Where the demo model is cached (default: $MOEMESH_CACHE or ~/.cache/moemesh).")
    var cacheDir: String?

    @Option(help: "Delay added to every expert Compute call, in ms (to simulate a slower device in tests and demos).")
    var expertComputeDelayMs: Int = 0

    @Option(
        help:
            "The router reaches the experts through Unix domain sockets (on) or TCP loopback (off); `moemesh status` shows which."
    )
    var unixSockets: BatchingSwitch = .on

    @Option(help: .hidden)
    var parentPid: Int32?

    @OptionGroup var routing: RoutingOptions
    @OptionGroup var auth: ServiceAuthOptions

    @Option(
        help:
            "Serve every endpoint with TLS, mutual between the processes, from this folder of `moemesh certs` files (created when it has none)."
    )
    var tls: String?

    @OptionGroup var http: HTTPOptions
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = try self.logging.bootstrap(label: "moemesh.up")
        guard ComputeDevice(self.device) != nil else {
            throw ValidationError("--device: expected cpu, cuda or cuda:N, got '\(self.device)'")
        }
        if let precision = self.precision, case .failure(let error) = PrecisionPlan.parse(precision) {
            throw ValidationError("--precision: \(error)")
        }
        guard self.replicas >= 1 else { throw ValidationError("--replicas: expected at least 1, got \(self.replicas)") }
        let modelPath: String
        if let model = self.model {
            modelPath = model
        } else {
            let demo = try DemoModel.ensure(cacheDirectory: self.cacheDir ?? DemoModel.defaultCacheDirectory)
            logger.info(
                demo.created ? "synthesised the demo model" : "using the cached demo model",
                metadata: ["path": "\(demo.path)"])
            modelPath = demo.path
        }
        guard self.expertsPerProcess >= 1 else {
            throw ValidationError("--experts-per-process: expected at least 1, got \(self.expertsPerProcess)")
        }
        let checkpoint = try MoECheckpoint(path: modelPath)
        let topK = checkpoint.layers.map(\.topK).max() ?? 1
        let groups = ScalingGroup.perExpertIndex(layers: checkpoint.layers, expertsPerGroup: self.expertsPerProcess)
        let cores = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        var configuration = LocalMesh.Configuration(
            executable: ChildProcess.currentExecutable, modelPath: modelPath, replicas: self.replicas,
            expertThreads: self.threads ?? max(1, cores / topK), host: self.host, routerPort: self.port,
            coordinatorPort: self.coordinatorPort,
            routerArguments: ["--log-level", self.logging.logLevel] + self.routing.arguments,
            expertArguments: [
                "--log-level", self.logging.logLevel, "--compute-delay-ms", String(self.expertComputeDelayMs),
                "--device", self.device,
            ] + (self.precision.map { ["--precision", $0] } ?? []),
            coordinator: try self.autoscaling.settings(groups: groups.count),
            httpPort: self.http.httpPort, unixSockets: self.unixSockets == .on)
        configuration.expertsPerProcess = self.expertsPerProcess
        try self.secure(&configuration, logger: logger)
        self.http.bootstrapMetrics()
        let mesh = LocalMesh(configuration: configuration, logger: logger)
        try await runServiceGroup(services: [mesh], parentPID: self.parentPid, logger: logger)
    }
}

extension Up {
    /// `--tls DIR` and `--auth-tokens`/`--token-file`: the coordinator (in this process), the router and every expert
    /// serve with them, and call each other with the mesh's certificate and token.
    func secure(_ configuration: inout LocalMesh.Configuration, logger: Logger) throws {
        var extra: [String] = []
        if let folder = self.tls {
            if !FileSystem.fileExists("\(folder)/ca.pem") {
                let hosts = self.host == "127.0.0.1" || self.host == "0.0.0.0" ? [] : [self.host]
                let written = try Certs.write(to: folder, hosts: hosts, days: 365, force: false)
                logger.notice(
                    "wrote a development CA and certificates", metadata: ["folder": "\(folder)", "files": "\(written)"])
            }
            let files = TLSFiles.folder(folder, role: "server")
            configuration.security.tls = files
            extra += ["--tls-cert", files.certificate!, "--tls-key", files.privateKey!, "--tls-ca", files.ca!]
        }
        if self.auth.authTokens != nil && self.auth.outgoing.tokenFile == nil {
            throw ValidationError(
                "--auth-tokens needs --token-file with a mesh token: the processes of the mesh call each other with it")
        }
        configuration.security = try self.auth.applied(to: configuration.security)
        extra += self.auth.replicaArguments
        configuration.routerArguments += extra
        configuration.expertArguments += extra
    }
}
