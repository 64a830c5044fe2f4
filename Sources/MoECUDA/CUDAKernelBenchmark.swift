import CCUDA
import MoECore
import MoEKernels

/// Times a SwiGLU expert's forward pass on a CUDA device, the rows already on the device in bf16 (as a framework
/// would hold them): the two products and the fused activation, between two events on the stream. Median of
/// `repeats` after `warmup` runs (plans, buffers and module load stay out of the figures). Weights in `precision`:
/// bf16 (cuBLASLt), int8 or fp8 (`quantized_matmul` for few rows, a bf16 copy and cuBLASLt for more).
public enum CUDAKernelBenchmark {
    public struct Timing: Sendable {
        public let tokens: Int
        public let medianMilliseconds: Double
        /// `2 · T · 3 · H · I` flops over the median time.
        public let teraflops: Double
        /// Weight bytes (`3 · H · I` times the bytes per weight) over the median time.
        public let weightTerabytesPerSecond: Double
    }

    public static func run(
        device: CUDADevice, hidden: Int, intermediate: Int, precision: WeightPrecision = .bf16, tokens: [Int],
        repeats: Int = 30, warmup: Int = 5, report: (Timing) -> Void = { _ in }
    ) throws -> [Timing] {
        let expert = try CUDAExpertKernel(
            randomSwiGLU: hidden, intermediateSize: intermediate, precision: precision, seed: 11, device: device)
        let largest = tokens.max() ?? 1
        let input = try device.allocate(bytes: largest * hidden * 2)
        let output = try device.allocate(bytes: largest * hidden * 4)
        var timings: [Timing] = []
        try device.withLane { (lane) throws(CUDAError) in
            try device.launch(
                device.kernels.fillUniformBF16, count: largest * hidden, stream: lane.stream,
                [
                    .pointer(input.address), .int64(Int64(largest * hidden)), .uint64(5), .float(1),
                ])
            for count in tokens {
                var samples: [Double] = []
                for run in 0..<(warmup + repeats) {
                    try CUDAError.check(ccuda_cuEventRecord(lane.start, lane.stream), "cuEventRecord")
                    try expert.encode(input: input.address, rows: count, output: output.address, lane: lane)
                    try CUDAError.check(ccuda_cuEventRecord(lane.end, lane.stream), "cuEventRecord")
                    try CUDAError.check(ccuda_cuEventSynchronize(lane.end), "waiting for the GPU")
                    var milliseconds: Float = 0
                    try CUDAError.check(
                        ccuda_cuEventElapsedTime(&milliseconds, lane.start, lane.end), "cuEventElapsedTime")
                    if run >= warmup { samples.append(Double(milliseconds)) }
                }
                samples.sort()
                let median = samples[samples.count / 2]
                let flops = 2.0 * Double(count) * 3 * Double(hidden) * Double(intermediate)
                let timing = Timing(
                    tokens: count, medianMilliseconds: median, teraflops: flops / (median * 1e-3) / 1e12,
                    weightTerabytesPerSecond: 3.0 * Double(precision.bytesPerWeight) * Double(hidden)
                        * Double(intermediate) / (median * 1e-3) / 1e12)
                timings.append(timing)
                report(timing)
            }
        }
        return timings
    }
}
