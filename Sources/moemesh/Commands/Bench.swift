import ArgumentParser
import MoEBench
import MoECore
import MoEKernels
import MoEModel
import MoEProcesses
import MoEServing
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure the mesh against the in-process reference on the same synthetic model, in one run.",
        discussion: """
            Starts a mesh of real processes (one per expert, a router, and a second router without batching) on \
            loopback, and runs the same MoE layer in this process; calls alternate. Per shape it prints tokens/s, \
            p50/p99 latency, the mesh/in-process ratio, payload bytes per token and CPU time per token, beside a \
            bare gRPC echo of the same payload (the floor of one hop) and the raw sgemm rate of the expert's GEMMs \
            (the floor of compute).
            """,
        subcommands: [BenchTransport.self, BenchOverload.self])

    @Option(help: "Hidden size H.") var hidden: Int = 1024
    @Option(help: "Expert intermediate size I.") var intermediate: Int = 2816
    @Option(help: "Experts.") var experts: Int = 8
    @Option(help: "Experts per token.") var topK: Int = 2
    @Option(help: "Token counts of the serial shapes, comma-separated.") var tokens: String = "1,8,256,2048"
    @Option(help: "Concurrent decode clients of the sweep, comma-separated.") var clients: String = "1,4,16"
    @Option(help: "Seconds measured per shape.") var seconds: Double = 3
    @Option(help: "Dtype of the rows between router and experts: f32, bf16 or f16.") var wireDtype: DType = .f32
    @Option(help: "How the experts' weights are stored (mesh and in-process reference): f32, bf16 or int8.")
    var precision: WeightPrecision = .f32
    @Option(help: "OpenBLAS threads per expert process (default: cores ÷ top-k).") var threads: Int?
    @Option(help: "Where the bench model is cached (default: $MOEMESH_CACHE or ~/.cache/moemesh).") var cacheDir:
        String?
    @Option(help: "The batching router's --batch-delay-us.") var batchDelayUs: Int?
    @Option(help: "The batching router's --batch-concurrency.") var batchConcurrency: Int?
    @Option(help: "The router reaches the experts through Unix domain sockets (on) or TCP loopback (off).")
    var unixSockets: BatchingSwitch = .on
    @Option(
        help:
            "Seconds one replica is hung (SIGSTOP) in the fault phase, on a mesh with 2 replicas per expert under 4 clients with 5 s deadlines (0: no fault phase)."
    )
    var hungS: Double = 8
    @Option(
        help:
            "Also measure decode on a fine-grained layer: 64 experts, top-8, I ÷ 4 (the same FLOPs per token), 8 experts per expert process (on), or not (off)."
    )
    var manyExperts: BatchingSwitch = .on
    @Flag(help: "Print one JSON object per shape instead of tables.") var json = false
    @Option(help: "Log level (default warning, so that the tables stand alone).") var logLevel: String = "warning"

    func run() async throws {
        let logger = try LoggingOptions.parse(["--log-level", self.logLevel]).bootstrap(label: "moemesh.bench")
        let cores = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        var configuration = BenchConfiguration(
            cacheDirectory: self.cacheDir ?? DemoModel.defaultCacheDirectory,
            executable: ChildProcess.currentExecutable,
            expertThreads: self.threads ?? max(1, cores / self.topK))
        configuration.shape = .init(
            experts: self.experts, topK: self.topK, hiddenSize: self.hidden, intermediateSize: self.intermediate,
            layers: 1)
        configuration.tokens = try Self.integers(self.tokens, option: "--tokens")
        configuration.clients = try Self.integers(self.clients, option: "--clients")
        configuration.secondsPerShape = self.seconds
        configuration.wireDType = self.wireDtype
        configuration.unixSockets = self.unixSockets == .on
        configuration.precision = self.precision
        guard self.hungS >= 0 else { throw ValidationError("--hung-s: expected 0 or more, got \(self.hungS)") }
        configuration.hungReplica = .milliseconds(Int(self.hungS * 1000))
        configuration.manyExperts =
            self.manyExperts == .on
            ? ModelSynthesizer.Shape(
                experts: 64, topK: 8, hiddenSize: self.hidden, intermediateSize: max(1, self.intermediate / 4),
                layers: 1)
            : nil
        configuration.routerArguments =
            (self.batchDelayUs.map { ["--batch-delay-us", String($0)] } ?? [])
            + (self.batchConcurrency.map { ["--batch-concurrency", String($0)] } ?? [])
        if let problem = configuration.shape.problem { throw ValidationError(problem) }

        let json = self.json
        let layers = Mutex<[BenchResult]>([]), kernels = Mutex<[KernelResult]>([]), faults = Mutex<[FaultResult]>([])
        let runner = BenchRunner(configuration: configuration, logger: logger) { step in
            // A progress line on standard error, rewritten in place.
            let text = step.isEmpty ? "\r\u{1B}[K" : "\r\u{1B}[Kbench: \(step)…"
            _ = text.withCString { write(STDERR_FILENO, $0, strlen($0)) }
        }
        if !json {
            print(
                "model: \(self.experts) experts, top-\(self.topK), H=\(self.hidden), I=\(self.intermediate), \(self.precision) weights; "
                    + "wire \(self.wireDtype) over \(self.unixSockets == .on ? "Unix domain sockets" : "TCP loopback"); OpenBLAS \(BLASKernelSet.current), \(BLAS.threadCount) threads in process, "
                    + "\(configuration.expertThreads) per expert process; \(cores) cores")
        }
        try await runner.run(
            emitLayer: { result in
                if json { print(BenchReport.json(result)) } else { layers.withLock { $0.append(result) } }
            },
            emitKernel: { result in
                if json { print(BenchReport.json(result)) } else { kernels.withLock { $0.append(result) } }
            },
            emitFault: { result in
                if json { print(BenchReport.json(result)) } else { faults.withLock { $0.append(result) } }
            })
        if !json {
            print("\nKernels (in process; FFN = SwiGLU expert, sgemm = its two GEMMs alone)")
            print(
                BenchReport.table(header: BenchReport.kernelHeader, rows: kernels.withLock { $0 }.map(BenchReport.row)))
            print(
                "\nMesh vs in-process (overhead = mesh p50 − in-process p50; overhead/echo = overhead / echo p50; msgs/tok = expert messages per token)"
            )
            print(BenchReport.table(header: BenchReport.layerHeader, rows: layers.withLock { $0 }.map(BenchReport.row)))
            let faults = faults.withLock { $0 }
            if !faults.isEmpty {
                print(
                    "\nA hung replica (2 replicas per expert; one replica of expert 0 stopped with SIGSTOP, then resumed; "
                        + "T = 1, 5 s deadlines; calls counted in the phase they end in)")
                print(BenchReport.table(header: BenchReport.faultHeader, rows: faults.map(BenchReport.row)))
            }
        }
    }

    static func integers(_ text: String, option: String) throws -> [Int] {
        try text.split(separator: ",").map { item in
            guard let value = Int(item), value > 0 else {
                throw ValidationError("\(option): expected positive integers separated by commas, got '\(item)'")
            }
            return value
        }
    }
}

extension WeightPrecision: ExpressibleByArgument {}
