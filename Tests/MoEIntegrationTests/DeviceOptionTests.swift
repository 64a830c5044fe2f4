import MoECUDA
import MoECore
import MoEKernels
import MoEModel
import MoEProcesses
import MoEServing
import MoETestSupport
import Testing

/// `moemesh expert`'s device options, as a user meets them: bad values and missing CUDA are clear errors.
@Suite("moemesh expert --device")
struct DeviceOptionTests {
    /// Runs `moemesh ARGUMENTS` and returns its exit status and everything it printed (standard error included).
    private func run(_ arguments: [String]) async throws -> (status: Int32?, output: String) {
        let command = "\"$0\" " + arguments.map { "'\($0)'" }.joined(separator: " ") + " 2>&1"
        let child = try await ChildProcess.start(
            name: "moemesh", executable: "/bin/sh", arguments: ["-c", command, MoemeshBinary.path])
        var lines: [String] = []
        for await line in child.outputLines { lines.append(line) }
        return (await child.waitForExit(timeout: .seconds(60)), lines.joined(separator: "\n"))
    }

    @Test(
        "a device that is not cpu, cuda or cuda:N, and a budget for the wrong device, are refused saying what was expected"
    )
    func badValues() async throws {
        let model = try SmallModel(
            shape: .init(experts: 2, topK: 1, hiddenSize: 8, intermediateSize: 16, layers: 1), seed: 3)
        defer { model.remove() }
        let gpu = try await self.run(["expert", "--model", model.path, "--device", "gpu"])
        #expect(
            gpu.status != 0 && gpu.output.contains("--device: expected cpu, cuda or cuda:N, got 'gpu'"), "\(gpu.output)"
        )
        let budget = try await self.run(["expert", "--model", model.path, "--gpu-memory-budget-mib", "64"])
        #expect(
            budget.status != 0 && budget.output.contains("--gpu-memory-budget-mib: expected --device cuda"),
            "\(budget.output)")
        let hostBudget = try await self.run([
            "expert", "--model", model.path, "--device", "cuda", "--memory-budget-mib", "64",
        ])
        #expect(
            hostBudget.status != 0 && hostBudget.output.contains("use --gpu-memory-budget-mib"), "\(hostBudget.output)")
    }

    @Test(
        "--device cuda where there is no CUDA driver stops at start, naming the library that is missing",
        .enabled(if: CUDADevice.unavailableReason != nil, "a CUDA device opens here"))
    func noCUDA() async throws {
        let model = try SmallModel(
            shape: .init(experts: 2, topK: 1, hiddenSize: 8, intermediateSize: 16, layers: 1), seed: 4)
        defer { model.remove() }
        let result = try await self.run(["expert", "--model", model.path, "--device", "cuda:0"])
        #expect(result.status != 0, "\(result.output)")
        #expect(
            result.output.contains("--device: no CUDA driver: libcuda.so.1 could not be opened"), "\(result.output)")
        let check = try await self.run(["kernels", "check", "--device", "cuda"])
        #expect(check.status != 0 && check.output.contains("libcuda.so.1"), "\(check.output)")
    }
}
