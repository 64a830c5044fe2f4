import ArgumentParser
import MoEBench
import MoECUDA
import MoECore
import MoEKernels
import MoEServing

#if canImport(Glibc)
    import Glibc
#endif

/// `moemesh kernels check|bench`: the expert kernels of a device, alone.
struct Kernels: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check or time the expert kernels of a device (CUDA against the CPU backend; CPU precisions).",
        subcommands: [
            KernelsCheck.self, KernelsBench.self, KernelsPrecision.self, KernelsDecode.self, KernelsLayer.self,
        ])
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
            stream and paging under a GPU memory budget; then int8 and fp8 experts against the CPU computing over \
            the same quantised weights. Each line gives ‖Y_gpu − Y_cpu‖ / ‖Y_cpu‖; the tolerance is 1e-2 (bf16 \
            activations, fp32 accumulation).
            """)

    @Option(help: "The GPU: cuda or cuda:N.") var device: String = "cuda"
    @Flag(help: "Leave out the Mixtral-size experts (for slow devices, such as the tests' CUDA emulator).")
    var skipLarge = false

    func run() throws {
        let cuda = try openCUDA(self.device)
        print("device: \(cuda.summary)")
        let results = try CUDABackendCheck.run(device: cuda, includeLarge: !self.skipLarge) { result in
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
        abstract: "Time a SwiGLU expert's forward pass on the GPU (rows on the device), per precision and token count.",
        discussion: """
            The two products and the fused activation between CUDA events; median of --repeats runs after warm-up. \
            bf16 weights go to cuBLASLt; int8 and fp8 weights (random bytes, per-channel scales) to the quantised \
            kernel for few rows and to a bf16 copy and cuBLASLt for more; with bf16 among --precisions each other \
            precision's time is also given against bf16's at the same token count, and each weight bandwidth \
            against the device's peak (its memory clock and bus width). scripts/bench_gpu.py runs this \
            beside PyTorch's `(silu(x@w1.T) * (x@w3.T)) @ w2.T` on the same GPU and prints the ratios.
            """)

    @Option(help: "The GPU: cuda or cuda:N.") var device: String = "cuda"
    @Option(help: "Hidden size H.") var hidden: Int = 4096
    @Option(help: "Expert intermediate size I.") var intermediate: Int = 14336
    @Option(help: "Token counts, comma-separated.") var tokens: String = "1,8,32,128,512,2048,8192"
    @Option(help: "Weight precisions, comma-separated: bf16, int8, fp8.") var precisions: String = "bf16"
    @Option(help: "Timed runs per token count.") var repeats: Int = 30
    @Option(
        help: ArgumentHelp(
            "Fail (exit 1) when a precision's weight bandwidth at the smallest token count is below this fraction of the device's peak.",
            valueName: "fraction"))
    var expectDecodeFraction: Double?
    @Flag(help: "One JSON object per precision and token count.") var json = false

    func run() throws {
        let tokens = try Bench.integers(self.tokens, option: "--tokens")
        guard self.hidden > 0, self.intermediate > 0, self.repeats > 0 else {
            throw ValidationError("--hidden, --intermediate, --repeats: expected positive values")
        }
        let precisions = try self.precisions.split(separator: ",").map { text in
            guard let precision = WeightPrecision(rawValue: String(text)), precision != .f32 else {
                throw ValidationError("--precisions: expected bf16, int8 or fp8, got '\(text)'")
            }
            return precision
        }
        if let fraction = self.expectDecodeFraction, !(fraction > 0 && fraction <= 1) {
            throw ValidationError("--expect-decode-fraction: expected a fraction in (0, 1], got \(fraction)")
        }
        let cuda = try openCUDA(self.device)
        let peak = cuda.peakMemoryBytesPerSecond.map { $0 / 1e12 }
        if !self.json {
            print("device: \(cuda.summary)")
            print("SwiGLU expert H=\(self.hidden) I=\(self.intermediate), fp32 accumulation")
            print("precision  tokens   median ms   TFLOP/s   weights TB/s   × peak   × bf16")
        }
        var bf16Milliseconds: [Int: Double] = [:]
        var shortfalls: [String] = []
        for precision in precisions {
            _ = try CUDAKernelBenchmark.run(
                device: cuda, hidden: self.hidden, intermediate: self.intermediate, precision: precision,
                tokens: tokens, repeats: self.repeats
            ) { timing in
                if precision == .bf16 { bf16Milliseconds[timing.tokens] = timing.medianMilliseconds }
                let speedup = bf16Milliseconds[timing.tokens].map { $0 / timing.medianMilliseconds }
                let ofPeak = peak.map { timing.weightTerabytesPerSecond / $0 }
                if let expected = self.expectDecodeFraction, timing.tokens == tokens.min() {
                    if let ofPeak, ofPeak < expected {
                        shortfalls.append(
                            "\(precision) at \(timing.tokens) tokens: \(DecimalFormat.fixed(timing.weightTerabytesPerSecond, 2)) "
                                + "TB/s of weights, \(DecimalFormat.fixed(ofPeak, 2)) of the peak; expected at least "
                                + "\(expected)")
                    } else if ofPeak == nil {
                        shortfalls.append("\(precision): the device does not report its memory's peak bandwidth")
                    }
                }
                if self.json {
                    print(
                        #"{"impl": "moemesh", "precision": "\#(precision)", "tokens": \#(timing.tokens), "#
                            + #""median_ms": \#(timing.medianMilliseconds)}"#)
                } else {
                    print(
                        pad(precision.rawValue, 9) + pad("\(timing.tokens)", 8)
                            + pad(DecimalFormat.fixed(timing.medianMilliseconds, 4), 12)
                            + pad(DecimalFormat.fixed(timing.teraflops, 1), 10)
                            + pad(DecimalFormat.fixed(timing.weightTerabytesPerSecond, 2), 15)
                            + pad(ofPeak.map { DecimalFormat.fixed($0, 2) } ?? "-", 9)
                            + pad(speedup.map { DecimalFormat.fixed($0, 2) } ?? "", 9))
                }
                fflush(nil)
            }
        }
        guard shortfalls.isEmpty else {
            for shortfall in shortfalls { print("below the expected decode bandwidth: \(shortfall)") }
            throw ExitCode(1)
        }
    }
}

struct KernelsPrecision: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "precision",
        abstract: "Time a SwiGLU expert on the CPU with f32, bf16 and int8 weights, per token count, against f32.",
        discussion: """
            The same random expert stored in each precision; best time of a forward pass over --seconds per case, \
            its speed over f32's in the same run, the bytes of its weights, and ‖Y − Y_f32‖ / ‖Y_f32‖. Says which \
            instruction set the bf16/int8 kernels use and which OpenBLAS kernels f32 uses.
            """)

    @Option(help: "Hidden size H.") var hidden: Int = 1024
    @Option(help: "Expert intermediate size I.") var intermediate: Int = 2816
    @Option(help: "Token counts, comma-separated.") var tokens: String = "1,4,16,64,512"
    @Option(help: "Precisions besides f32, comma-separated.") var precisions: String = "bf16,int8"
    @Option(help: "Distinct experts called in turn (8: weights come from memory, not from a cache holding one).")
    var experts: Int = 8
    @Option(help: "Seconds of timed runs per case.") var seconds: Double = 1
    @Option(help: "Threads (default: one per core).") var threads: Int?

    func run() throws {
        let tokens = try Bench.integers(self.tokens, option: "--tokens")
        let precisions = try cpuBenchmarkPrecisions(
            self.precisions, hidden: self.hidden, intermediate: self.intermediate, experts: self.experts,
            seconds: self.seconds, threads: self.threads)
        print(CPUExpertBackend().summary)
        print("SwiGLU expert H=\(self.hidden) I=\(self.intermediate), \(self.experts) experts called in turn")
        print("tokens  precision   weights MiB   best µs   × f32   rel. error vs f32")
        do {
            _ = try PrecisionBenchmark.run(
                hidden: self.hidden, intermediate: self.intermediate, tokens: tokens, precisions: precisions,
                experts: self.experts, seconds: self.seconds
            ) { row in
                print(
                    pad("\(row.tokens)", 6) + pad(row.precision.rawValue, 11)
                        + pad(DecimalFormat.fixed(Double(row.weightBytes) / 1_048_576, 1), 14)
                        + pad(DecimalFormat.fixed(row.microseconds, 0), 10)
                        + pad(DecimalFormat.fixed(row.speedup, 2), 8)
                        + pad(String(format: "%.2e", row.relativeError), 20))
                fflush(nil)
            }
        } catch {
            throw ValidationError("\(error)")
        }
    }
}

struct KernelsDecode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decode",
        abstract: "Weight GB/s of a SwiGLU expert on the CPU per precision and row count, against sgemv's.",
        discussion: """
            Distinct experts called in turn, so that weights come from memory. Per precision and row count, taking \
            turns call by call (medians): sgemv over the expert's f32 weights for one row (the memory's speed as \
            OpenBLAS reaches it), the forward pass as served with its weight GB/s and that over sgemv's, its time \
            over the same precision's at the first row count, and the three products alone on the direct kernels \
            and on sgemm. Ends with the largest row count at which the direct kernels were still the quicker, \
            against the limit the products use (WeightMatrix.directRowLimit).
            """)

    @Option(help: "Hidden size H.") var hidden: Int = 1024
    @Option(help: "Expert intermediate size I.") var intermediate: Int = 2816
    @Option(help: "Row counts, comma-separated.") var tokens: String = "1,2,4,8,16,32,64,128,256"
    @Option(help: "Precisions, comma-separated: f32, bf16, int8.") var precisions: String = "f32,bf16,int8"
    @Option(help: "Distinct experts called in turn (16 of H=1024, I=2816 hold 138–553 MiB: beyond any L3 cache).")
    var experts: Int = 16
    @Option(help: "Seconds of timed runs per case.") var seconds: Double = 0.5
    @Option(help: "Threads (default: one per core).") var threads: Int?

    func run() throws {
        let tokens = try Bench.integers(self.tokens, option: "--tokens")
        let precisions = try cpuBenchmarkPrecisions(
            self.precisions, hidden: self.hidden, intermediate: self.intermediate, experts: self.experts,
            seconds: self.seconds, threads: self.threads)
        print(CPUExpertBackend().summary + ", \(BLAS.threadCount) threads")
        print("SwiGLU expert H=\(self.hidden) I=\(self.intermediate), \(self.experts) experts called in turn")
        print(
            "precision  rows   sgemv µs   sgemv GB/s    FFN µs   weights GB/s   × sgemv   × rows=\(tokens[0])   "
                + "direct µs   sgemm µs   served")
        var firstTime: [WeightPrecision: Double] = [:]
        do {
            let rows = try DecodeKernelBenchmark.run(
                hidden: self.hidden, intermediate: self.intermediate, tokens: tokens, precisions: precisions,
                experts: self.experts, seconds: self.seconds
            ) { row in
                let first = firstTime[row.precision] ?? row.ffnMicroseconds
                firstTime[row.precision] = first
                print(
                    pad(row.precision.rawValue, 9) + pad("\(row.tokens)", 6)
                        + pad(DecimalFormat.fixed(row.sgemvMicroseconds, 0), 11)
                        + pad(DecimalFormat.fixed(row.sgemvGigabytesPerSecond, 1), 13)
                        + pad(DecimalFormat.fixed(row.ffnMicroseconds, 0), 10)
                        + pad(DecimalFormat.fixed(row.weightGigabytesPerSecond, 1), 15)
                        + pad(DecimalFormat.fixed(row.weightGigabytesPerSecond / row.sgemvGigabytesPerSecond, 2), 10)
                        + pad(DecimalFormat.fixed(row.ffnMicroseconds / first, 2), 12)
                        + pad(DecimalFormat.fixed(row.directMicroseconds, 0), 12)
                        + pad(DecimalFormat.fixed(row.sgemmMicroseconds, 0), 11)
                        + pad(row.served.rawValue, 9))
                fflush(nil)
            }
            for precision in precisions {
                let measured =
                    DecodeKernelBenchmark.crossover(rows, precision).map { "direct quicker up to \($0) rows" }
                    ?? "sgemm quicker from the first row count"
                print(
                    "\(precision): \(measured); the products use direct up to \(WeightMatrix.directRowLimit)"
                )
            }
        } catch {
            throw ValidationError("\(error)")
        }
    }
}

/// The CPU precisions of `--precisions`, once the shape and timing options are checked; applies `--threads`.
private func cpuBenchmarkPrecisions(
    _ text: String, hidden: Int, intermediate: Int, experts: Int, seconds: Double, threads: Int?
) throws -> [WeightPrecision] {
    let precisions = try text.split(separator: ",").map { item in
        guard let precision = WeightPrecision(rawValue: String(item)), precision != .fp8 else {
            throw ValidationError("--precisions: expected f32, bf16 or int8, got '\(item)'")
        }
        return precision
    }
    guard hidden > 0, intermediate > 0, seconds > 0, experts > 0, threads.map({ $0 > 0 }) ?? true else {
        throw ValidationError("--hidden, --intermediate, --seconds, --experts, --threads: expected positive values")
    }
    if let threads { BLAS.threadCount = threads }
    return precisions
}

private func pad(_ text: String, _ width: Int) -> String {
    String(repeating: " ", count: max(0, width - text.count)) + text
}
