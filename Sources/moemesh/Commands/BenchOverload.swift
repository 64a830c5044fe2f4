import ArgumentParser
import MoEBench
import MoEModel
import MoEProcesses
import MoEServing

#if canImport(Glibc)
    import Glibc
#endif

/// `moemesh bench overload`: an open-loop load at multiples of the mesh's capacity.
struct BenchOverload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "overload",
        abstract: "Find a local mesh's capacity, then offer it 1×, 2× and 4× that load open loop, with deadlines.",
        discussion: """
            Starts a mesh of the bench model (as `moemesh bench`) and finds its capacity with closed-loop clients \
            (1, 2, 4, … at once, the best rate of answers within their deadline). Then calls arrive at fixed rates \
            whatever the answers, spread over several connections, each with --deadline-ms: per rate it prints \
            the calls answered in time (goodput, against the capacity), the calls refused (RESOURCE_EXHAUSTED) and \
            how fast, every other failure by code, and the router's peak resident memory; then the router's memory \
            after the load.
            """)

    @Option(help: "Tokens per call.") var tokens: Int = 4
    @Option(help: "Each call's deadline, in milliseconds.") var deadlineMs: Int = 1000
    @Option(help: "Seconds of load per rate.") var seconds: Double = 10
    @Option(help: "Multiples of the capacity offered, comma-separated.") var multiples: String = "1,2,4"
    @Option(help: "Client connections the load is spread over.") var connections: Int = 4
    @Option(help: "OpenBLAS threads per expert process (default: cores ÷ top-k).") var threads: Int?
    @Option(help: "Where the bench model is cached (default: $MOEMESH_CACHE or ~/.cache/moemesh).") var cacheDir:
        String?

    func run() async throws {
        let multiples = try self.multiples.split(separator: ",").map { item -> Double in
            guard let value = Double(item), value > 0 else {
                throw ValidationError("--multiples: expected positive numbers separated by commas, got '\(item)'")
            }
            return value
        }
        guard self.tokens > 0, self.deadlineMs > 0, self.seconds > 0, self.connections > 0 else {
            throw ValidationError("--tokens, --deadline-ms, --seconds and --connections: expected positive values")
        }
        let cores = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        var benchmark = OverloadBenchmark(
            executable: ChildProcess.currentExecutable,
            cacheDirectory: self.cacheDir ?? DemoModel.defaultCacheDirectory,
            expertThreads: self.threads ?? max(1, cores / 2))
        benchmark.tokens = self.tokens
        benchmark.deadline = .milliseconds(self.deadlineMs)
        benchmark.seconds = self.seconds
        benchmark.multiples = multiples
        benchmark.connections = self.connections
        let logger = try LoggingOptions.parse(["--log-level", "warning"]).bootstrap(label: "moemesh.bench")
        let report = try await benchmark.run(logger: logger) { step in
            let text = step.isEmpty ? "\r\u{1B}[K" : "\r\u{1B}[Kbench: \(step)…"
            _ = text.withCString { write(STDERR_FILENO, $0, strlen($0)) }
        }
        print(
            "capacity: \(Int(report.capacityPerSecond)) calls/s of \(self.tokens) tokens (\(report.capacityClients) closed-loop clients); "
                + "\(self.deadlineMs) ms deadlines, \(self.connections) connections, \(cores) cores")
        print(BenchReport.table(header: BenchReport.overloadHeader, rows: report.rows.map(BenchReport.row)))
        print(
            "router resident memory: \(Int(report.routerMiBBefore)) MiB before, "
                + "\(Int(report.rows.map(\.routerPeakMiB).max() ?? 0)) MiB at the peak, \(Int(report.routerMiBAfter)) MiB 8 s after the load"
        )
        if !report.refusalSample.isEmpty { print("a refusal: \(report.refusalSample)") }
        for row in report.rows {
            for (code, message) in row.failureSamples.sorted(by: { "\($0.key)" < "\($1.key)" }) {
                print("at \(row.multiple)×, \(code): \(message)")
            }
        }
    }
}
