import CCUDA
import MoECore

/// An expert FFN on a CUDA device: weights resident in bf16, GEMMs by cuBLASLt with fp32 accumulation, the
/// activation in one pass over the first GEMM's output.
///
/// Gated: `A [N, 2I] = X · [W_gate; W_up]ᵀ` (bf16), `Z = act(A[:, :I]) ⊙ A[:, I:]`, `Y [N, H] = Z · W_downᵀ` (f32).
/// Plain: `Z = act(X · W_inᵀ)`, `Y = Z · W_outᵀ`. Clamped SwiGLU (GPT-OSS): as gated, biases added in f32.
/// Per call: rows copied in through a pinned buffer, converted to bf16 on the device, Y copied out.
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
    /// `[2I, H]` (gated: gate rows, then up rows) or `[I, H]` (plain), bf16.
    let firstProjection: DeviceMemory
    /// `[H, I]`, bf16.
    let secondProjection: DeviceMemory

    /// Bytes of device memory the weights hold.
    public var residentBytes: Int {
        var bytes = self.firstProjection.bytes + self.secondProjection.bytes
        if case .clampedSwiGLU(let gateUpBias, let downBias, _, _) = self.form {
            bytes += gateUpBias.bytes + downBias.bytes
        }
        return bytes
    }

    /// Uploads `weights` (rounded to bf16) to `device`.
    public init(weights: ExpertWeights, device: CUDADevice) throws(CUDAError) {
        precondition(weights.shapeProblem == nil, weights.shapeProblem ?? "")
        let h = weights.hiddenSize, i = weights.intermediateSize
        self.hiddenSize = h
        self.intermediateSize = i
        self.device = device
        switch weights {
        case .gated(let gate, let up, let down, let activation):
            self.firstProjection = try Self.upload([gate, up], device: device)
            self.secondProjection = try Self.upload([down], device: device)
            self.form = .gated(activation: activation.cudaCode)
        case .plain(let input, let output, let activation):
            self.firstProjection = try Self.upload([input], device: device)
            self.secondProjection = try Self.upload([output], device: device)
            self.form = .plain(activation: activation.cudaCode)
        case .clampedSwiGLU(let gate, let up, let down, let gateBias, let upBias, let downBias, let limit, let alpha):
            self.firstProjection = try Self.upload([gate, up], device: device)
            self.secondProjection = try Self.upload([down], device: device)
            let gateUpBias = try device.allocate(bytes: 2 * i * 4), downBiasMemory = try device.allocate(bytes: h * 4)
            try (gateBias + upBias).withUnsafeBufferPointer { (values) throws(CUDAError) in
                try gateUpBias.upload(values)
            }
            try downBias.withUnsafeBufferPointer { (values) throws(CUDAError) in try downBiasMemory.upload(values) }
            self.form = .clampedSwiGLU(gateUpBias: gateUpBias, downBias: downBiasMemory, limit: limit, alpha: alpha)
        }
    }

    /// A SwiGLU expert with uniform random bf16 weights generated on the device (benchmarks): scales `1/√H`, `1/√I`.
    public init(randomSwiGLU hiddenSize: Int, intermediateSize: Int, seed: UInt64, device: CUDADevice) throws(CUDAError)
    {
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.device = device
        self.form = .gated(activation: Activation.silu.cudaCode)
        let count = 2 * intermediateSize * hiddenSize
        self.firstProjection = try device.allocate(bytes: count * 2)
        self.secondProjection = try device.allocate(bytes: count)
        try device.withLane { (lane) throws(CUDAError) in
            try device.launch(
                device.kernels.fillUniformBF16, count: count, stream: lane.stream,
                [
                    .pointer(self.firstProjection.address), .int64(Int64(count)), .uint64(seed),
                    .float(1 / Float(hiddenSize).squareRoot()),
                ])
            try device.launch(
                device.kernels.fillUniformBF16, count: count / 2, stream: lane.stream,
                [
                    .pointer(self.secondProjection.address), .int64(Int64(count / 2)), .uint64(seed &+ 1),
                    .float(1 / Float(intermediateSize).squareRoot()),
                ])
            try lane.synchronize()
        }
    }

    /// Concatenates the matrices' rows, rounds to bf16 and copies them to a new device buffer.
    private static func upload(_ matrices: [Matrix], device: CUDADevice) throws(CUDAError) -> DeviceMemory {
        let count = matrices.reduce(0) { $0 + $1.values.count }
        let memory = try device.allocate(bytes: count * 2)
        var offset = 0
        for matrix in matrices {
            // In chunks, so that a Mixtral-size projection never needs a second full-size host copy.
            let chunk = 1 << 22
            var start = 0
            while start < matrix.values.count {
                let end = min(start + chunk, matrix.values.count)
                let bits = matrix.values[start..<end].map(HalfPrecision.bfloat16(from:))
                try bits.withUnsafeBufferPointer { (values) throws(CUDAError) in
                    try memory.upload(values, at: offset + start * 2)
                }
                start = end
            }
            offset += matrix.values.count * 2
        }
        return memory
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
            try lane.matmul(
                weights: self.firstProjection.address, input: input, output: projected, m: 2 * i, n: n, k: h,
                outputType: Int32(CCUDA_R_16BF))
            try self.device.launch(
                kernels.gatedActivation, count: n * i / 8, stream: lane.stream,
                [
                    .pointer(projected), .pointer(hidden), .int32(Int32(n)), .int32(Int32(i)), .int32(activation),
                ])
        case .clampedSwiGLU(let gateUpBias, _, let limit, let alpha):
            let projected = try lane.buffer(.projected, bytes: n * 2 * i * 2)
            try lane.matmul(
                weights: self.firstProjection.address, input: input, output: projected, m: 2 * i, n: n, k: h,
                outputType: Int32(CCUDA_R_16BF))
            try self.device.launch(
                kernels.clampedSwiGLU, count: n * i, stream: lane.stream,
                [
                    .pointer(projected), .pointer(gateUpBias.address), .pointer(hidden), .int32(Int32(n)),
                    .int32(Int32(i)),
                    .float(limit), .float(alpha),
                ])
        case .plain(let activation):
            try lane.matmul(
                weights: self.firstProjection.address, input: input, output: hidden, m: i, n: n, k: h,
                outputType: Int32(CCUDA_R_16BF))
            try self.device.launch(
                kernels.activationInPlace, count: n * i, stream: lane.stream,
                [
                    .pointer(hidden), .int64(Int64(n * i)), .int32(activation),
                ])
        }
        try lane.matmul(
            weights: self.secondProjection.address, input: hidden, output: output, m: h, n: n, k: i,
            outputType: Int32(CCUDA_R_32F))
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

/// The CUDA backend: experts' weights resident in bf16 on one device.
public struct CUDAExpertBackend: ExpertBackend {
    public let cuda: CUDADevice
    private let grouped: CUDAGroupedStep

    public init(device: CUDADevice) {
        self.cuda = device
        self.grouped = CUDAGroupedStep(device: device)
    }

    public var device: ComputeDevice { .cuda(ordinal: self.cuda.ordinal) }
    public var summary: String { self.cuda.summary }
    public var concurrency: Int { self.cuda.laneCount }
    public var groupedStep: (any GroupedExpertStep)? { self.grouped }
    /// bf16 only for now: int8 and fp8 weight-only kernels on CUDA are not built yet (the CPU serves int8).
    public var precisions: [WeightPrecision] { [.bf16] }

    public func makeKernel(_ weights: ExpertWeights, precision: WeightPrecision) throws -> (
        kernel: any ExpertKernel, bytes: Int
    ) {
        try self.check(precision)
        let kernel = try CUDAExpertKernel(weights: weights, device: self.cuda)
        return (kernel, kernel.residentBytes)
    }
}
