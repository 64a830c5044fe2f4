import ArgumentParser
import MoEBench

#if canImport(Glibc)
    import Glibc
#endif

/// `moemesh bench transport`: the data plane's transports side by side, one echo round trip each.
struct BenchTransport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transport",
        abstract: "Measure one gRPC round trip on each transport of the data plane, paired, in this process.",
        discussion: """
            Echoes a payload on loopback, client and server in this process: gRPC's C++ core alone (a C++ client \
            and server: the floor), the bridge MoEMesh serves its data plane on (Swift channel and server on the C++ \
            core; the method inline on the core's thread, or in a task) and grpc-swift on NIO. Prints p50/p99 per \
            round trip, the process's CPU per round trip (client and server together) and p50 over the C++ core's \
            stream echo of the same payload.
            """)

    @Option(help: "Payload sizes in bytes, comma-separated.") var payloads: String = "4096,24576,1048576"
    @Option(help: "Seconds measured per row and round.") var seconds: Double = 1
    @Option(help: "Rounds over all rows, interleaved.") var rounds: Int = 2

    func run() async throws {
        let payloads = try Bench.integers(self.payloads, option: "--payloads")
        guard self.seconds > 0, self.rounds > 0 else {
            throw ValidationError(
                "--seconds and --rounds: expected positive values, got \(self.seconds), \(self.rounds)")
        }
        let benchmark = TransportBenchmark(payloads: payloads, secondsPerRow: self.seconds, rounds: self.rounds)
        let rows = try await benchmark.run { step in
            let text = "\r\u{1B}[Kbench: \(step)…"
            _ = text.withCString { write(STDERR_FILENO, $0, strlen($0)) }
        }
        _ = "\r\u{1B}[K".withCString { write(STDERR_FILENO, $0, strlen($0)) }
        print(BenchReport.table(header: BenchReport.transportHeader, rows: rows.map(BenchReport.row)))
    }
}
