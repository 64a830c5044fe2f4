import CCUDA
import MoECore
import MoEKernels

/// An expert FFN on a CUDA device: weights resident in bf16, or weight-only int8/fp8 (`DeviceWeights`); fp32
/// accumulation; the activation in one pass over the first product's output.
///
/// Gated: `A [N, 2I] = X · [W_gate; W_up]ᵀ` (bf16), `Z = act(A[:, :I]) ⊙ A[:, I:]`, `Y [N, H] = Z · W_downᵀ` (f32).
/// Plain: `Z = act(X · W_inᵀ)`, `Y = Z · W_outᵀ`. Clamped SwiGLU (GPT-OSS): as gated, biases added in f32.
/// Per call: rows copied in through a pinned buffer, converted to bf16 on the device, Y copied out.
///
/// Products: bf16 weights by cuBLASLt. int8/fp8 weights, for up to `directTokenLimit` rows (decode), by
/// `quantized_matmul`, which reads each weight byte once and widens it in registers; for more rows (prefill) each
/// projection is widened to bf16 in the lane's scratch buffer (`dequantize_to_bf16`) and multiplied by cuBLASLt.
public final class CUDAExpertKernel: ExpertKernel, @unchecked Sendable {
    enum Form {
        case gated(activation: Int32)
        case plain(activation: Int32)
        case clampedSwiGLU(gateUpBias: DeviceMemory, downBias: DeviceMemory, limit: Float, alpha: Float)
    }

    public let hiddenSize: Int
    public let intermediateSize: Int
    let device: CUDADevice
    let form: Form
    /// `[2I, H]` (gated: gate rows, then up rows) or `[I, H]` (plain).
    let firstProjection: DeviceWeights
    /// `[H, I]`.
    let secondProjection: DeviceWeights

    /// Most token rows the quantised products take directly; more are multiplied by cuBLASLt over a bf16 copy.
    static let directTokenLimit = 16

    /// The precision the weights are held in.
    public var precision: WeightPrecision { self.firstProjection.precision }

    /// Bytes of device memory the weights hold (scales included).
    public var residentBytes: Int {
        var bytes = self.firstProjection.bytes + self.secondProjection.bytes
        if case .clampedSwiGLU(let gateUpBias, let downBias, _, _) = self.form {
            bytes += gateUpBias.bytes + downBias.bytes
        }
        return bytes
    }

    /// Uploads `weights` to `device` in `precision` (bf16: rounded; int8, fp8: quantised as `BlockQuantizedWeights`).
    /// - Throws: `WeightPrecisionError` for f32 or non-finite weights in int8/fp8, `CUDAError` from the device.
    public init(weights: ExpertWeights, precision: WeightPrecision = .bf16, device: CUDADevice) throws {
        precondition(weights.shapeProblem == nil, weights.shapeProblem ?? "")
        let h = weights.hiddenSize, i = weights.intermediateSize
        self.hiddenSize = h
        self.intermediateSize = i
        self.device = device
        switch weights {
        case .gated(let gate, let up, let down, let activation):
            self.firstProjection = try DeviceWeights([gate, up], precision: precision, device: device)
            self.secondProjection = try DeviceWeights([down], precision: precision, device: device)
            self.form = .gated(activation: activation.cudaCode)
        case .plain(let input, let output, let activation):
            self.firstProjection = try DeviceWeights([input], precision: precision, device: device)
            self.secondProjection = try DeviceWeights([output], precision: precision, device: device)
            self.form = .plain(activation: activation.cudaCode)
        case .clampedSwiGLU(let gate, let up, let down, let gateBias, let upBias, let downBias, let limit, let alpha):
            self.firstProjection = try DeviceWeights([gate, up], precision: precision, device: device)
            self.secondProjection = try DeviceWeights([down], precision: precision, device: device)
            let gateUpBias = try device.allocate(bytes: 2 * i * 4), downBiasMemory = try device.allocate(bytes: h * 4)
            try (gateBias + upBias).withUnsafeBufferPointer { (values) throws(CUDAError) in
                try gateUpBias.upload(values)
            }
            try downBias.withUnsafeBufferPointer { (values) throws(CUDAError) in try downBiasMemory.upload(values) }
            self.form = .clampedSwiGLU(gateUpBias: gateUpBias, downBias: downBiasMemory, limit: limit, alpha: alpha)
        }
    }

    /// A SwiGLU expert with random weights generated on the device (benchmarks): bf16 uniform with scales `1/√H`,
    /// `1/√I`; int8 and fp8 random bytes with per-output-channel scales giving weights of about that size.
    public init(
        randomSwiGLU hiddenSize: Int, intermediateSize: Int, precision: WeightPrecision = .bf16, seed: UInt64,
        device: CUDADevice
    ) throws {
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.device = device
        self.form = .gated(activation: Activation.silu.cudaCode)
        self.firstProjection = try DeviceWeights(
            random: precision, rows: 2 * intermediateSize, columns: hiddenSize, seed: seed, device: device)
        self.secondProjection = try DeviceWeights(
            random: precision, rows: hiddenSize, columns: intermediateSize, seed: seed &+ 1, device: device)
    }

    public func forward(_ rows: Matrix) throws -> Matrix {
        precondition(rows.columns == self.hiddenSize, "expert input: expected \(self.hiddenSize) columns")
        let n = rows.rows, h = self.hiddenSize
        guard n > 0 else { return Matrix(rows: 0, columns: h, values: []) }
        let device = self.device
        return try device.withLane { (lane) throws(CUDAError) -> Matrix in
            let bytes = n * h * 4
            let pinnedIn = try lane.pinnedBuffer(.inputF32, bytes: bytes)
            let pinnedOut = try lane.pinnedBuffer(.output, bytes: bytes)
            let inputF32 = try lane.buffer(.inputF32, bytes: bytes)
            let input = try lane.buffer(.input, bytes: n * h * 2)
            let output = try lane.buffer(.output, bytes: bytes)
            rows.values.withUnsafeBytes { pinnedIn.copyMemory(from: $0.baseAddress!, byteCount: bytes) }
            try CUDAError.check(
                ccuda_cuMemcpyHtoDAsync(inputF32, pinnedIn, bytes, lane.stream), "copying rows to the GPU")
            try device.launch(
                device.kernels.f32ToBF16, count: n * h / 4, stream: lane.stream,
                [
                    .pointer(inputF32), .pointer(input), .int64(Int64(n * h)),
                ])
            try self.encode(input: input, rows: n, output: output, lane: lane)
            try CUDAError.check(
                ccuda_cuMemcpyDtoHAsync(pinnedOut, output, bytes, lane.stream), "copying rows from the GPU")
            try lane.synchronize()
            let values = [Float](unsafeUninitializedCapacity: n * h) { buffer, initialized in
                UnsafeMutableRawPointer(buffer.baseAddress!).copyMemory(from: pinnedOut, byteCount: bytes)
                initialized = n * h
            }
            return Matrix(rows: n, columns: h, values: values)
        }
    }

    /// Queues the FFN on `lane`'s stream: `input` bf16 `[rows, H]` (device) → `output` f32 `[rows, H]` (device).
    func encode(input: CUdeviceptr, rows n: Int, output: CUdeviceptr, lane: CUDALane) throws(CUDAError) {
        let h = self.hiddenSize, i = self.intermediateSize
        let kernels = self.device.kernels
        let hidden = try lane.buffer(.hidden, bytes: n * i * 2)
        switch self.form {
        case .gated(let activation):
            let projected = try lane.buffer(.projected, bytes: n * 2 * i * 2)
            try self.firstProjection.multiply(
                input, rows: n, into: projected, outputF32: false, lane: lane)
            try self.device.launch(
                kernels.gatedActivation, count: n * i / 8, stream: lane.stream,
                [
                    .pointer(projected), .pointer(hidden), .int32(Int32(n)), .int32(Int32(i)), .int32(activation),
                ])
        case .clampedSwiGLU(let gateUpBias, _, let limit, let alpha):
            let projected = try lane.buffer(.projected, bytes: n * 2 * i * 2)
            try self.firstProjection.multiply(
                input, rows: n, into: projected, outputF32: false, lane: lane)
            try self.device.launch(
                kernels.clampedSwiGLU, count: n * i, stream: lane.stream,
                [
                    .pointer(projected), .pointer(gateUpBias.address), .pointer(hidden), .int32(Int32(n)),
                    .int32(Int32(i)),
                    .float(limit), .float(alpha),
                ])
        case .plain(let activation):
            try self.firstProjection.multiply(
                input, rows: n, into: hidden, outputF32: false, lane: lane)
            try self.device.launch(
                kernels.activationInPlace, count: n * i, stream: lane.stream,
                [
                    .pointer(hidden), .int64(Int64(n * i)), .int32(activation),
                ])
        }
        try self.secondProjection.multiply(
            hidden, rows: n, into: output, outputF32: true, lane: lane)
        if case .clampedSwiGLU(_, let downBias, _, _) = self.form {
            try self.device.launch(
                kernels.addBias, count: n * h, stream: lane.stream,
                [
                    .pointer(output), .pointer(downBias.address), .int32(Int32(n)), .int32(Int32(h)),
                ])
        }
    }
}

extension Activation {
    /// The kernels' activation code (expert_kernels.cu): 0 relu, 1 gelu, 2 gelu (tanh), 3 silu.
    var cudaCode: Int32 {
        switch self {
        case .relu: 0
        case .gelu: 1
        case .geluTanh: 2
        case .silu: 3
        }
    }
}

/// The CUDA backend: experts' weights resident on one device in bf16, or weight-only int8 or fp8.
public struct CUDAExpertBackend: ExpertBackend {
    public let cuda: CUDADevice
    private let grouped: CUDAGroupedStep

    public init(device: CUDADevice) {
        self.cuda = device
        self.grouped = CUDAGroupedStep(device: device)
    }

    public var device: ComputeDevice { .cuda(ordinal: self.cuda.ordinal) }
    /// The device, and how each precision's products run (logged when an expert service starts).
    public var summary: String {
        "\(self.cuda.summary); bf16: cuBLASLt; int8/fp8 weight-only: quantized_matmul up to "
            + "\(CUDAExpertKernel.directTokenLimit) rows, a bf16 copy and cuBLASLt beyond"
    }
    public var concurrency: Int { self.cuda.laneCount }
    public var groupedStep: (any GroupedExpertStep)? { self.grouped }
    public var precisions: [WeightPrecision] { DeviceWeights.precisions }

    public func makeKernel(_ weights: ExpertWeights, precision: WeightPrecision) throws -> (
        kernel: any ExpertKernel, bytes: Int
    ) {
        try self.check(precision)
        let kernel = try CUDAExpertKernel(weights: weights, precision: precision, device: self.cuda)
        return (kernel, kernel.residentBytes)
    }
}
