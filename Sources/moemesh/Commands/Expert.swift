import MoECore
import ArgumentParser
import MoEExpert
import MoEKernels
import MoEModel
import MoEServing
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

struct Expert: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve expert FFNs of a model (gRPC moemesh.v1.Expert).")

    @Option(help: "Model folder (config.json + *.safetensors).")
    var model: String

    @Option(help: "Experts to host: LAYER:EXPERTS items, comma-separated; * for all, N or A-B. Example: '*:0-3'.")
    var experts: String = "*:*"

    @Option(help: "OpenBLAS threads (default: one per core).")
    var threads: Int?

    @Option(help: "Address to listen on.")
    var host: String = "127.0.0.1"

    @Option(help: "Port to listen on (0: any free port, printed in the ready line).")
    var port: Int = 0

    @Option(help: "Largest message, in MiB.")
    var maxMessageMib: Int = 256

    @Option(
        help: "Coordinator to register with and heartbeat to (HOST:PORT); routers then learn of this replica from it.")
    var coordinator: String?

    @Option(help: "Scaling group named in the registration (default: the --experts selection).")
    var group: String?

    @Option(help: "Host routers should connect to (default: --host; in a pod, its IP).")
    var advertiseHost: String?

    @Option(
        help:
            "Also listen on this Unix domain socket (a path, at most 107 bytes); routers on the same host connect through it instead of TCP."
    )
    var unixSocket: String?

    @Option(
        help:
            "Most MiB of expert weights resident at once: experts are loaded on first use and the least recently used evicted (default: every hosted expert stays loaded)."
    )
    var memoryBudgetMib: Int?

    @Option(help: "Where the experts run: cpu (OpenBLAS), cuda or cuda:N (GPU N; CUDA libraries loaded at run time).")
    var device: String = "cpu"

    @Option(
        help:
            "How the experts' weights are stored: f32, bf16 or int8 (per-channel scales) on cpu; bf16, int8 or fp8 (e4m3, 128 × 128 blocks) on cuda; for all experts or per LAYER:EXPERTS item, later items winning. Example: '*:*=int8,0:3=bf16' (default: f32 on cpu, bf16 on cuda)."
    )
    var precision: String?

    @Option(
        help:
            "With --device cuda: most MiB of GPU memory for expert weights; experts stay in host memory (the mapped checkpoint) and are paged onto the GPU on first use, the least recently used evicted (default: every hosted expert resident on the GPU)."
    )
    var gpuMemoryBudgetMib: Int?

    @Option(help: "Delay added to every Compute call, in ms (to simulate a slower device in tests and demos).")
    var computeDelayMs: Int = 0

    @Option(help: .hidden)
    var parentPid: Int32?

    @OptionGroup var auth: ServiceAuthOptions
    @OptionGroup var limits: ConnectionLimitOptions
    @OptionGroup var dataPlane: DataPlaneOptions
    @OptionGroup var tls: TLSOptions
    @OptionGroup var http: HTTPOptions
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = try self.logging.bootstrap(label: "moemesh.expert")
        let selection: ExpertSelection
        switch ExpertSelection.parse(self.experts) {
        case .success(let parsed): selection = parsed
        case .failure(let error): throw ValidationError("--experts: \(error)")
        }
        let precisions: PrecisionPlan
        switch self.precision.map(PrecisionPlan.parse) ?? .success(.deviceDefault) {
        case .success(let parsed): precisions = parsed
        case .failure(let error): throw ValidationError("--precision: \(error)")
        }
        let coordinator = try self.coordinator.map { text in
            guard let endpoint = ServiceEndpoint(text) else {
                throw ValidationError("--coordinator: expected HOST:PORT, got '\(text)'")
            }
            return endpoint
        }
        guard let device = ComputeDevice(self.device) else {
            throw ValidationError("--device: expected cpu, cuda or cuda:N, got '\(self.device)'")
        }
        switch (device, self.memoryBudgetMib, self.gpuMemoryBudgetMib) {
        case (.cpu, _, .some):
            throw ValidationError("--gpu-memory-budget-mib: expected --device cuda, got --device cpu")
        case (.cuda, .some, _):
            throw ValidationError(
                "--memory-budget-mib: applies to --device cpu; with --device cuda use --gpu-memory-budget-mib")
        default: break
        }
        if let budget = self.gpuMemoryBudgetMib, budget < 1 {
            throw ValidationError("--gpu-memory-budget-mib: expected at least 1, got \(budget)")
        }
        if let path = self.unixSocket, path.isEmpty || path.utf8.count > 107 {
            throw ValidationError("--unix-socket: expected a path of 1 to 107 bytes, got \(path.utf8.count) bytes")
        }
        guard self.computeDelayMs >= 0 else {
            throw ValidationError("--compute-delay-ms: expected 0 or more, got \(self.computeDelayMs)")
        }
        let configuration = ExpertConfiguration(
            modelPath: self.model, experts: selection, threads: self.threads,
            serving: try self.tls.appliedToService(
                self.auth.applied(
                    to: self.dataPlane.applied(
                        to: self.limits.applied(
                            to: ServingConfiguration(
                                host: self.host, port: self.port, maxMessageBytes: self.maxMessageMib << 20))))),
            coordinator: coordinator, group: self.group, advertiseHost: self.advertiseHost, unixSocket: self.unixSocket,
            instance: getenv("POD_NAME").map { String(cString: $0) } ?? String(getpid()),
            computeDelay: self.computeDelayMs > 0 ? .milliseconds(self.computeDelayMs) : nil,
            memoryBudgetBytes: (self.memoryBudgetMib ?? self.gpuMemoryBudgetMib).map { $0 << 20 }, device: device,
            precisions: precisions)
        if let budget = self.memoryBudgetMib, budget < 1 {
            throw ValidationError("--memory-budget-mib: expected at least 1, got \(budget)")
        }
        configuration.serving.warnIfPlaintextBeyondLoopback(logger)
        self.http.bootstrapMetrics()
        let services = try buildExpertServices(configuration: configuration, logger: logger)
        let http =
            self.http.metricsEndpoint(serving: configuration.serving, logger: logger).map { [$0 as any Service] } ?? []
        let tracing = try Observability.tracingService(serviceName: "moemesh-expert", logger: logger).map { [$0] } ?? []
        try await runServiceGroup(services: tracing + http + services, parentPID: self.parentPid, logger: logger)
    }
}
