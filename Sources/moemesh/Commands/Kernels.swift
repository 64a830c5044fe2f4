import ArgumentParser
import MoECore
import MoEKernels
import MoEServing

#if canImport(Glibc)
    import Glibc
#endif

/// `moemesh kernels check|bench`: the expert kernels of a device, alone.
struct Kernels: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check or time the expert kernels of a device (CUDA against the CPU backend).",
        subcommands: [KernelsCheck.self, KernelsBench.self])
}

/// Parses `--device` for the kernel commands: CUDA only.
private func openCUDA(_ text: String) throws -> CUDADevice {
    guard let device = ComputeDevice(text) else {
        throw ValidationError("--device: expected cuda or cuda:N, got '\(text)'")
    }
    guard case .cuda(let ordinal) = device else {
        throw ValidationError("--device: expected cuda or cuda:N (the CPU backend is the reference), got '\(text)'")
    }
    do {
        return try CUDADevice.open(ordinal: ordinal)
    } catch {
        throw ValidationError("--device \(text): \(error)")
    }
}

struct KernelsCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Run every expert form on the GPU and on the CPU backend, and compare (exit 1 on a mismatch).",
        discussion: """
            Random experts of every form (gated and plain FFNs with each activation, GPT-OSS's clamped SwiGLU with \
            biases, odd widths, a Mixtral-size expert), a grouped step of four experts, concurrent calls on every \
            stream and paging under a GPU memory budget. Each line gives ‖Y_gpu − Y_cpu‖ / ‖Y_cpu‖; the tolerance \
            is 1e-2 (bf16 weights, fp32 accumulation).
            """)

    @Option(help: "The GPU: cuda or cuda:N.") var device: String = "cuda"

    func run() throws {
        let cuda = try openCUDA(self.device)
        print("device: \(cuda.summary)")
        let results = try CUDABackendCheck.run(device: cuda) { result in
            print(result)
            fflush(nil)
        }
        let failed = results.filter { !$0.passed }
        print(
            "\(results.count - failed.count) of \(results.count) cases within \(CUDABackendCheck.tolerance) relative error"
        )
        if !failed.isEmpty { throw ExitCode(1) }
    }
}

struct KernelsBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Time a SwiGLU expert's forward pass on the GPU (bf16 weights, rows on the device), per token count.",
        discussion: """
            The two cuBLASLt GEMMs and the fused activation between CUDA events; median of --repeats runs after \
            warm-up. scripts/bench-gpu.sh runs this beside PyTorch's `(silu(x@w1.T) * (x@w3.T)) @ w2.T` on the same \
            GPU and prints the ratios.
            """)

    @Option(help: "The GPU: cuda or cuda:N.") var device: String = "cuda"
    @Option(help: "Hidden size H.") var hidden: Int = 4096
    @Option(help: "Expert intermediate size I.") var intermediate: Int = 14336
    @Option(help: "Token counts, comma-separated.") var tokens: String = "1,8,32,128,512,2048,8192"
    @Option(help: "Timed runs per token count.") var repeats: Int = 30
    @Flag(help: "One JSON object per token count.") var json = false

    func run() throws {
        let tokens = try Bench.integers(self.tokens, option: "--tokens")
        guard self.hidden > 0, self.intermediate > 0, self.repeats > 0 else {
            throw ValidationError("--hidden, --intermediate, --repeats: expected positive values")
        }
        let cuda = try openCUDA(self.device)
        if !self.json {
            print("device: \(cuda.summary)")
            print("SwiGLU expert H=\(self.hidden) I=\(self.intermediate), bf16 weights, fp32 accumulation")
            print("tokens   median ms   TFLOP/s   weights TB/s")
        }
        let json = self.json
        _ = try CUDAKernelBenchmark.run(
            device: cuda, hidden: self.hidden, intermediate: self.intermediate, tokens: tokens, repeats: self.repeats
        ) { timing in
            if json {
                print(#"{"impl": "moemesh", "tokens": \#(timing.tokens), "median_ms": \#(timing.medianMilliseconds)}"#)
            } else {
                print(
                    pad("\(timing.tokens)", 6) + pad(DecimalFormat.fixed(timing.medianMilliseconds, 4), 12)
                        + pad(DecimalFormat.fixed(timing.teraflops, 1), 10)
                        + pad(DecimalFormat.fixed(timing.weightTerabytesPerSecond, 2), 15))
            }
            fflush(nil)
        }
    }
}

private func pad(_ text: String, _ width: Int) -> String {
    String(repeating: " ", count: max(0, width - text.count)) + text
}
