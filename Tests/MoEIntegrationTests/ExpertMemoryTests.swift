import MoECore
import MoEModel
import MoEProcesses
import MoEServing
import MoETestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("expert processes hold only their own experts")
struct ExpertMemoryTests {
    @Test("resident memory grows with the experts hosted, not with the model")
    func residentMemory() async throws {
        // 2 layers × 8 experts × 3 × 256 × 1024 × 4 bytes = 48 MiB of expert weights; 3 MiB per expert.
        let model = try SmallModel(
            shape: .init(experts: 8, topK: 2, hiddenSize: 256, intermediateSize: 1024, layers: 2))
        defer { model.remove() }
        let perExpert = 3 * 256 * 1024 * 4
        var resident: [String: Int] = [:]
        for selection in ["0:0", "*:0-1", "*:*"] {
            let expert = try await ChildProcess.start(
                name: selection, executable: MoemeshBinary.path,
                arguments: [
                    "expert", "--model", model.path, "--experts", selection, "--port", "0", "--threads", "1",
                    "--log-level", "warning", "--parent-pid", String(getpid()),
                ])
            defer { expert.signal(SIGKILL); _ = expert.pollExit() }
            _ = try #require(await expert.waitForReadyLine(role: "expert", timeout: .seconds(60)))
            resident[selection] = try #require(MoemeshBinary.anonymousResidentBytes(of: expert.pid))
        }
        let one = resident["0:0"]!, four = resident["*:0-1"]!, all = resident["*:*"]!
        print(
            "expert RssAnon: 1 expert \(one >> 20) MiB, 4 experts \(four >> 20) MiB, 16 experts \(all >> 20) MiB "
                + "(model: \(16 * perExpert >> 20) MiB of expert weights)")
        // Anonymous memory: the checkpoint's mapped pages (file-backed, the page cache's) were still counted in VmRSS
        // at the ready line in some runs (+47 MiB: the whole file), depending on when its mapping was released.
        // Hosting more experts costs their weights (less up to one expert's worth of load scratch the allocator keeps
        // and reuses), and no more: a process with one expert does not hold the model's other 15.
        #expect(all - one >= 14 * perExpert && all - one <= 15 * perExpert * 2)
        #expect(four - one >= 2 * perExpert && four - one <= 3 * perExpert * 3)
    }
}
