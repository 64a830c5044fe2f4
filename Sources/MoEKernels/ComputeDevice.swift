import MoECore

/// Where an expert service runs its kernels: `cpu` (OpenBLAS) or `cuda[:N]` (CUDA device N, default 0).
public enum ComputeDevice: Sendable, Hashable, CustomStringConvertible {
    case cpu
    case cuda(ordinal: Int)

    /// Parses `cpu`, `cuda` or `cuda:N`; nil for anything else.
    public init?(_ text: String) {
        switch text {
        case "cpu": self = .cpu
        case "cuda": self = .cuda(ordinal: 0)
        default:
            guard text.hasPrefix("cuda:"), let ordinal = Int(text.dropFirst(5)), ordinal >= 0 else { return nil }
            self = .cuda(ordinal: ordinal)
        }
    }

    public var description: String {
        switch self {
        case .cpu: "cpu"
        case .cuda(let ordinal): "cuda:\(ordinal)"
        }
    }
}

/// Builds expert kernels for one device: the CPU backend (f32, bf16 or int8 weights) or the CUDA backend (bf16
/// weights resident on the GPU, loaded at run time).
public protocol ExpertBackend: Sendable {
    var device: ComputeDevice { get }
    /// One line for the logs: the device, its kernels and libraries.
    var summary: String { get }
    /// Forward passes worth running at once (CPU: one, as each uses every BLAS thread; CUDA: one per stream).
    var concurrency: Int { get }
    /// The precisions this device stores weights in; the first is its default.
    var precisions: [WeightPrecision] { get }
    /// An expert's kernel, its weights stored in `precision`, and the bytes it holds on the device.
    func makeKernel(_ weights: ExpertWeights, precision: WeightPrecision) throws -> (
        kernel: any ExpertKernel, bytes: Int
    )
    /// Runs several experts' rows as one step (CUDA: one grouped GEMM per projection); nil when the backend has no
    /// grouped path, and the caller runs them one by one.
    var groupedStep: (any GroupedExpertStep)? { get }
}

/// Several experts' forward passes in one step: `outputs[j] = kernels[j].forward(inputs[j])`.
public protocol GroupedExpertStep: Sendable {
    func forward(_ work: [(kernel: any ExpertKernel, rows: Matrix)]) throws -> [Matrix]
}

extension ExpertBackend {
    /// The device's default precision.
    public var defaultPrecision: WeightPrecision { self.precisions[0] }

    /// An expert's kernel in the device's default precision.
    public func makeKernel(_ weights: ExpertWeights) throws -> (kernel: any ExpertKernel, bytes: Int) {
        try self.makeKernel(weights, precision: self.defaultPrecision)
    }

    /// Throws unless the device stores weights in `precision`.
    public func check(_ precision: WeightPrecision) throws(WeightPrecisionError) {
        guard self.precisions.contains(precision) else {
            if precision == .fp8 && self.device == .cpu { throw .unsupportedOnCPU(precision) }
            throw .unsupportedOnDevice(precision, device: self.device.description, supported: self.precisions)
        }
    }
}

/// f32 weights through OpenBLAS; bf16 and int8 weights through `WeightMatrix`'s kernels.
public struct CPUExpertBackend: ExpertBackend {
    public init() {}
    public var device: ComputeDevice { .cpu }
    public var summary: String {
        "cpu: OpenBLAS \(BLASKernelSet.current), \(BLAS.threadCount) threads; bf16/int8 kernels: "
            + "\(QuantizedKernelPath.best) (f32 activations)"
    }
    public var concurrency: Int { 1 }
    public var precisions: [WeightPrecision] { [.f32, .bf16, .int8] }
    public var groupedStep: (any GroupedExpertStep)? { nil }
    public func makeKernel(_ weights: ExpertWeights, precision: WeightPrecision) throws -> (
        kernel: any ExpertKernel, bytes: Int
    ) {
        try self.check(precision)
        let kernel = try CPUExpertKernel(weights: weights, precision: precision)
        return (kernel, kernel.residentBytes)
    }
}
