import MoEProcesses
import MoEServing
import MoETestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("moemesh bench")
struct BenchCommandTests {
    @Test("--json prints one object per shape with the documented keys, mesh and in-process both measured")
    func jsonOutput() async throws {
        let cache = TemporaryDirectory()
        defer { cache.remove() }
        let bench = try await ChildProcess.start(
            name: "bench", executable: MoemeshBinary.path,
            arguments: [
                "bench", "--hidden", "32", "--intermediate", "48", "--experts", "4", "--tokens", "1,8",
                "--clients", "2", "--seconds", "0.2", "--hung-s", "0.5", "--cache-dir", cache.path, "--json",
            ])
        var lines: [String] = []
        for await line in bench.outputLines { lines.append(line) }
        #expect(await bench.waitForExit(timeout: .seconds(120)) == 0)
        let kernels = lines.filter { $0.contains("\"kernels\"") }
        let faults = lines.filter { $0.contains("\"hung replica\"") }
        let layers = lines.filter { !$0.contains("\"kernels\"") && !$0.contains("\"hung replica\"") }
        // T = 1, T = 8, the 2-client sweep point, and the top-8 / 64-expert decode row.
        #expect(kernels.count == 2 && layers.count == 4, "\(lines)")
        try #require(faults.count == 3, "\(lines)")
        #expect(faults[0].contains("\"phase\": \"healthy\""))
        #expect(faults[1].contains("\"phase\": \"one replica hung (SIGSTOP)\""))
        #expect(faults[2].contains("\"phase\": \"after SIGCONT\""))
        for line in faults {
            for key in ["requests", "lost", "requests_per_s", "throughput_vs_healthy", "p50_us", "p99_us"] {
                #expect(line.contains("\"\(key)\": "), "\(key) missing in \(line)")
            }
            #expect(!line.contains("\"requests\": 0,"), "a phase without requests: \(line)")
        }
        for line in layers {
            for key in [
                "tokens", "clients", "mesh_tokens_per_s", "inprocess_tokens_per_s", "ratio", "mesh_p50_us",
                "mesh_p99_us", "inprocess_p50_us", "echo_p50_us", "wire_bytes_per_token",
            ] {
                #expect(line.contains("\"\(key)\": "), "\(key) missing in \(line)")
            }
            #expect(!line.contains("\"mesh_tokens_per_s\": 0.0,") && !line.contains("\"inprocess_tokens_per_s\": 0.0,"))
        }
        #expect(layers.first?.contains("\"tokens\": 1, \"clients\": 1") == true)
        let sweep = layers.filter { $0.contains("batching_gain") }
        #expect(sweep.count == 1 && sweep[0].contains("\"clients\": 2"), "\(layers)")
        let manyExperts = layers.filter { $0.contains("top-8 of 64 on 8") }
        #expect(manyExperts.count == 1, "\(layers)")
        // Experts 8 per process: a token's 8 experts cost at most 8 messages, and at least one.
        let messages = manyExperts.first.flatMap { line in
            line.firstRange(of: "\"expert_messages_per_token\": ").map {
                Double(line[$0.upperBound...].prefix { $0 != "," && $0 != "}" })
            }
        }
        #expect(messages.flatMap { $0 }.map { $0 >= 1 && $0 <= 8 } == true, "\(manyExperts)")
        #expect(manyExperts.first?.contains("\"experts_per_token\": 8") == true)
        for line in kernels { #expect(line.contains("\"ffn_gflops\": ") && line.contains("\"sgemm_gflops\": ")) }
    }
}
