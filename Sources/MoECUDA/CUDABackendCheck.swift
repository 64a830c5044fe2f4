import CCUDA
import Dispatch
import MoECore
import MoEKernels
import RealModule
import Synchronization

/// Checks the CUDA backend against the CPU backend on random experts of every form, one result per case:
/// `‖Y_gpu − Y_cpu‖ / ‖Y_cpu‖` must stay under `tolerance` (bf16 weights and activations, fp32 accumulation).
/// Cases: each activation of gated and plain FFNs, GPT-OSS's clamped SwiGLU with biases, widths that are not multiples
/// of 8, a Mixtral-size expert, a grouped step of four experts, concurrent calls on all streams, and paging under a
/// GPU memory budget; then int8 and fp8 weights against the CPU over the same weights quantised and widened back
/// (`ExpertWeights.roundTripped(through:)`): the direct kernel's token tiles (1, 8, 9, 16 rows), the bf16 copy for
/// more, per-channel and 128 × 128 blocks, widths that take the kernel's byte-at-a-time path, a Mixtral-size expert
/// and a grouped step. Run by `moemesh kernels check --device cuda` and by the GPU tests.
public enum CUDABackendCheck {
    public static let tolerance = 1e-2

    public struct Result: Sendable, CustomStringConvertible {
        public let name: String
        public let tokens: Int
        public let relativeError: Double
        /// "3.14e-03".
        static func scientific(_ value: Double) -> String {
            guard value.isFinite, value > 0 else { return "\(value)" }
            var exponent = Int(Double.log10(value).rounded(.down))
            var mantissa = value / Double.pow(10, exponent)
            if (mantissa * 100).rounded() >= 1000 { mantissa /= 10; exponent += 1 }
            let hundredths = Int((mantissa * 100).rounded())
            let digits = "\(hundredths / 100).\(hundredths % 100 < 10 ? "0" : "")\(hundredths % 100)"
            return digits + "e" + (exponent < 0 ? "-" : "+") + (abs(exponent) < 10 ? "0" : "") + "\(abs(exponent))"
        }
        public var passed: Bool { self.relativeError.isFinite && self.relativeError < CUDABackendCheck.tolerance }
        public var description: String {
            return
                "\(self.passed ? "ok  " : "FAIL") \(self.name), \(self.tokens) rows: relative error \(Self.scientific(self.relativeError))"
        }
    }

    /// Runs every case on `device` (the Mixtral-size ones only with `includeLarge`), reporting each as it finishes.
    public static func run(
        device: CUDADevice, seed: UInt64 = 7, includeLarge: Bool = true, report: (Result) -> Void = { _ in }
    ) throws -> [Result] {
        var results: [Result] = []
        func record(_ result: Result) {
            results.append(result)
            report(result)
        }
        var random = UniformSource(seed: seed)
        // Each activation, gated and plain.
        for activation in Activation.allCases {
            let gated = random.gated(hidden: 256, intermediate: 704, activation: activation)
            for tokens in [1, 33, 300] {
                record(
                    try Self.compare(
                        "gated \(activation.rawValue) H=256 I=704", gated, tokens: tokens, device: device,
                        random: &random))
            }
            let plain = random.plain(hidden: 256, intermediate: 1024, activation: activation)
            record(
                try Self.compare(
                    "plain \(activation.rawValue) H=256 I=1024", plain, tokens: 17, device: device, random: &random))
        }
        let clamped = random.clampedSwiGLU(hidden: 256, intermediate: 512)
        for tokens in [1, 40] {
            record(
                try Self.compare(
                    "clamped SwiGLU + biases (GPT-OSS) H=256 I=512", clamped, tokens: tokens, device: device,
                    random: &random))
        }
        // Widths that are not multiples of 8 (the kernels' scalar paths, unaligned GEMM rows).
        let odd = random.gated(hidden: 202, intermediate: 300, activation: .silu)
        for tokens in [1, 3, 65] {
            record(try Self.compare("gated silu H=202 I=300", odd, tokens: tokens, device: device, random: &random))
        }
        // A Mixtral-size expert through the real upload path.
        if includeLarge {
            let mixtral = random.gated(hidden: 4096, intermediate: 14336, activation: .silu)
            record(
                try Self.compare(
                    "gated silu H=4096 I=14336 (Mixtral)", mixtral, tokens: 5, device: device, random: &random))
        }

        // A grouped step: four experts, one with no rows.
        let experts = (0..<4).map { _ in random.gated(hidden: 256, intermediate: 704, activation: .silu) }
        let counts = [3, 0, 17, 64]
        let inputs = counts.map { random.matrix(rows: $0, columns: 256) }
        let gpuKernels = try experts.map { try CUDAExpertKernel(weights: $0, device: device) }
        let step = CUDAGroupedStep(device: device)
        let outputs = try step.forward(zip(gpuKernels, inputs).map { (kernel: $0 as any ExpertKernel, rows: $1) })
        let grouped = step.usesGroupedGEMM ? "grouped GEMM" : "per-expert GEMMs (no grouped GEMM in this cuBLAS)"
        for (index, weights) in experts.enumerated() where counts[index] > 0 {
            let expected = CPUExpertKernel(weights: weights).forward(inputs[index])
            record(
                Result(
                    name: "grouped step, expert \(index) of 4 (\(grouped))", tokens: counts[index],
                    relativeError: outputs[index].relativeError(to: expected)))
        }

        // Concurrent calls on every stream: each result must be its own input's.
        let shared = gpuKernels[0]
        let cpu = CPUExpertKernel(weights: experts[0])
        let concurrentInputs = (0..<16).map { index in random.matrix(rows: 1 + index * 7, columns: 256) }
        let errors = Mutex<[Double]>(Array(repeating: .nan, count: 16))
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 16) { index in
            do {
                let output = try shared.forward(concurrentInputs[index])
                let error = output.relativeError(to: cpu.forward(concurrentInputs[index]))
                errors.withLock { $0[index] = error }
            } catch {
                failures.withLock { $0.append("\(error)") }
            }
        }
        if let failure = failures.withLock({ $0.first }) { throw CUDAError("concurrent forward passes: \(failure)") }
        record(
            Result(
                name: "16 concurrent calls on \(device.laneCount) streams (worst)", tokens: 106,
                relativeError: errors.withLock { $0.max() ?? .nan }))

        // Paging under a budget of two experts: four experts in turn, twice.
        let bytesPerExpert = gpuKernels[0].residentBytes
        let cache = ExpertCache<Int>(budgetBytes: 2 * bytesPerExpert) { index in
            let kernel = try CUDAExpertKernel(weights: experts[index], device: device)
            return (kernel, kernel.residentBytes)
        }
        var worst = 0.0
        for index in [0, 1, 2, 3, 0, 1, 2, 3] {
            let rows = random.matrix(rows: 9, columns: 256)
            let output = try cache.kernel(for: index).forward(rows)
            worst = max(worst, output.relativeError(to: CPUExpertKernel(weights: experts[index]).forward(rows)))
        }
        let stats = cache.statistics
        guard stats.misses == 8, stats.evictions == 6, stats.residentBytes <= 2 * bytesPerExpert else {
            throw CUDAError(
                "GPU expert cache: expected 8 loads and 6 evictions within \(2 * bytesPerExpert) bytes, got \(stats)")
        }
        record(
            Result(
                name: "paging 4 experts through a 2-expert GPU budget (8 loads, 6 evictions)", tokens: 9,
                relativeError: worst))
        for precision in [WeightPrecision.int8, .fp8] {
            try Self.checkQuantized(
                precision, device: device, includeLarge: includeLarge, random: &random, record: record)
        }
        return results
    }

    /// The int8 or fp8 cases.
    private static func checkQuantized(
        _ precision: WeightPrecision, device: CUDADevice, includeLarge: Bool, random: inout UniformSource,
        record: (Result) -> Void
    ) throws {
        // I = 704: fp8 in 1 × 128 blocks (704 rows is no multiple of 128); I = 512: 128 × 128 blocks.
        let cases: [(String, ExpertWeights, [Int])] = [
            (
                "gated silu H=256 I=704", random.gated(hidden: 256, intermediate: 704, activation: .silu),
                [1, 8, 9, 16, 17, 300]
            ),
            ("gated gelu H=256 I=512", random.gated(hidden: 256, intermediate: 512, activation: .gelu), [1, 5, 40]),
            ("plain relu H=256 I=1024", random.plain(hidden: 256, intermediate: 1024, activation: .relu), [3, 33]),
            ("clamped SwiGLU + biases H=256 I=512", random.clampedSwiGLU(hidden: 256, intermediate: 512), [1, 40]),
            (
                "gated silu H=202 I=300 (byte-at-a-time)",
                random.gated(hidden: 202, intermediate: 300, activation: .silu), [1, 3, 65]
            ),
        ]
        for (name, weights, tokenCounts) in cases {
            let kernel = try CUDAExpertKernel(weights: weights, precision: precision, device: device)
            let reference = CPUExpertKernel(weights: try weights.roundTripped(through: precision))
            for tokens in tokenCounts {
                let rows = random.matrix(rows: tokens, columns: weights.hiddenSize)
                record(
                    Result(
                        name: "\(precision) \(name)", tokens: tokens,
                        relativeError: try kernel.forward(rows).relativeError(to: reference.forward(rows))))
            }
        }
        if includeLarge {
            let mixtral = random.gated(hidden: 4096, intermediate: 14336, activation: .silu)
            let mixtralKernel = try CUDAExpertKernel(weights: mixtral, precision: precision, device: device)
            let mixtralReference = CPUExpertKernel(weights: try mixtral.roundTripped(through: precision))
            for tokens in [1, 24] {
                let rows = random.matrix(rows: tokens, columns: 4096)
                record(
                    Result(
                        name:
                            "\(precision) gated silu H=4096 I=14336 (Mixtral, \(mixtralKernel.residentBytes >> 20) MiB)",
                        tokens: tokens,
                        relativeError: try mixtralKernel.forward(rows).relativeError(to: mixtralReference.forward(rows))
                    ))
            }
        }
        // A grouped step of quantised experts (each through its own products).
        let experts = (0..<3).map { _ in random.gated(hidden: 256, intermediate: 512, activation: .silu) }
        let counts = [2, 0, 30]
        let inputs = counts.map { random.matrix(rows: $0, columns: 256) }
        let kernels = try experts.map { try CUDAExpertKernel(weights: $0, precision: precision, device: device) }
        let outputs = try CUDAGroupedStep(device: device).forward(
            zip(kernels, inputs).map { (kernel: $0 as any ExpertKernel, rows: $1) })
        for (index, weights) in experts.enumerated() where counts[index] > 0 {
            let expected = CPUExpertKernel(weights: try weights.roundTripped(through: precision)).forward(inputs[index])
            record(
                Result(
                    name: "\(precision) grouped step, expert \(index) of 3", tokens: counts[index],
                    relativeError: outputs[index].relativeError(to: expected)))
        }
    }

    private static func compare(
        _ name: String, _ weights: ExpertWeights, tokens: Int, device: CUDADevice, random: inout UniformSource
    ) throws -> Result {
        let rows = random.matrix(rows: tokens, columns: weights.hiddenSize)
        let gpu = try CUDAExpertKernel(weights: weights, device: device).forward(rows)
        let cpu = CPUExpertKernel(weights: weights).forward(rows)
        return Result(name: name, tokens: tokens, relativeError: gpu.relativeError(to: cpu))
    }
}

/// Uniform values in [−1, 1) from SplitMix64, for random experts and rows.
struct UniformSource {
    private var state: UInt64

    init(seed: UInt64) { self.state = seed }

    mutating func next() -> Float {
        self.state &+= 1
        return Float(SplitMix64.mix(self.state) >> 40) / Float(1 << 23) - 1
    }

    mutating func matrix(rows: Int, columns: Int, scale: Float = 1) -> Matrix {
        Matrix(rows: rows, columns: columns, values: (0..<(rows * columns)).map { _ in scale * self.next() })
    }

    mutating func gated(hidden: Int, intermediate: Int, activation: Activation) -> ExpertWeights {
        let inScale = 1 / Float(hidden).squareRoot(), outScale = 1 / Float(intermediate).squareRoot()
        return .gated(
            gate: self.matrix(rows: intermediate, columns: hidden, scale: 2 * inScale),
            up: self.matrix(rows: intermediate, columns: hidden, scale: 2 * inScale),
            down: self.matrix(rows: hidden, columns: intermediate, scale: 2 * outScale), activation: activation)
    }

    mutating func plain(hidden: Int, intermediate: Int, activation: Activation) -> ExpertWeights {
        .plain(
            input: self.matrix(rows: intermediate, columns: hidden, scale: 2 / Float(hidden).squareRoot()),
            output: self.matrix(rows: hidden, columns: intermediate, scale: 2 / Float(intermediate).squareRoot()),
            activation: activation)
    }

    mutating func clampedSwiGLU(hidden: Int, intermediate: Int) -> ExpertWeights {
        // Scaled up so that the clamp (limit 7) is reached by some values.
        .clampedSwiGLU(
            gate: self.matrix(rows: intermediate, columns: hidden, scale: 16 / Float(hidden).squareRoot()),
            up: self.matrix(rows: intermediate, columns: hidden, scale: 16 / Float(hidden).squareRoot()),
            down: self.matrix(rows: hidden, columns: intermediate, scale: 2 / Float(intermediate).squareRoot()),
            gateBias: (0..<intermediate).map { _ in self.next() }, upBias: (0..<intermediate).map { _ in self.next() },
            downBias: (0..<hidden).map { _ in self.next() }, limit: 7, alpha: 1.702)
    }
}
