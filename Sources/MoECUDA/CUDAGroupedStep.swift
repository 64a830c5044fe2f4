import CCUDA
import MoECore
import MoEKernels
import Synchronization

/// Several experts of one device in one step: their rows copied in and converted together, each projection as one
/// cuBLAS grouped GEMM (`cublasGemmGroupedBatchedEx`, one group per expert: `m`, `k` shared, `n` = its rows; bf16 in
/// and out, fp32 accumulation: cuBLAS 13 refuses f32 output there, so the second writes bf16, widened in one pass),
/// one activation pass over all rows, one copy out. Where the library has no grouped GEMM (cuBLAS < 12.5) or refuses
/// it, the GEMMs run one expert after another on the same stream; experts of other forms (biases) likewise.
public final class CUDAGroupedStep: GroupedExpertStep {
    let device: CUDADevice
    /// Set once cuBLAS refused a grouped GEMM; later steps go straight to the per-expert path.
    private let groupedRefused = Atomic<Bool>(false)

    public init(device: CUDADevice) { self.device = device }

    /// Whether steps run as grouped GEMMs (false: the library has none, or refused one).
    public var usesGroupedGEMM: Bool { ccuda_has_grouped_gemm() != 0 && !self.groupedRefused.load(ordering: .relaxed) }

    public func forward(_ work: [(kernel: any ExpertKernel, rows: Matrix)]) throws -> [Matrix] {
        let kernels = work.compactMap { $0.kernel as? CUDAExpertKernel }
        guard kernels.count == work.count, let first = kernels.first, kernels.allSatisfy({ $0.device === self.device })
        else {
            return try work.map { try $0.kernel.forward($0.rows) }
        }
        let h = first.hiddenSize
        let counts = work.map(\.rows.rows)
        let total = counts.reduce(0, +)
        guard total > 0 else { return counts.map { Matrix(rows: $0, columns: h, values: []) } }
        let device = self.device
        return try device.withLane { (lane) throws(CUDAError) -> [Matrix] in
            let bytes = total * h * 4
            let pinnedIn = try lane.pinnedBuffer(.inputF32, bytes: bytes)
            let pinnedOut = try lane.pinnedBuffer(.output, bytes: bytes)
            let inputF32 = try lane.buffer(.inputF32, bytes: bytes)
            let input = try lane.buffer(.input, bytes: total * h * 2)
            let output = try lane.buffer(.output, bytes: bytes)
            var offset = 0
            for item in work {
                item.rows.values.withUnsafeBytes {
                    (pinnedIn + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count)
                }
                offset += item.rows.values.count * 4
            }
            try CUDAError.check(
                ccuda_cuMemcpyHtoDAsync(inputF32, pinnedIn, bytes, lane.stream), "copying rows to the GPU")
            try device.launch(
                device.kernels.f32ToBF16, count: total * h / 4, stream: lane.stream,
                [
                    .pointer(inputF32), .pointer(input), .int64(Int64(total * h)),
                ])
            if !(try self.encodeGrouped(kernels, counts: counts, input: input, output: output, lane: lane)) {
                var row = 0
                for (kernel, n) in zip(kernels, counts) where n > 0 {
                    try kernel.encode(
                        input: input + CUdeviceptr(row * h * 2), rows: n, output: output + CUdeviceptr(row * h * 4),
                        lane: lane)
                    try lane.synchronize()  // the per-expert path reuses the lane's scratch buffers
                    row += n
                }
            }
            try CUDAError.check(
                ccuda_cuMemcpyDtoHAsync(pinnedOut, output, bytes, lane.stream), "copying rows from the GPU")
            try lane.synchronize()
            var row = 0
            return counts.map { n in
                let values = [Float](unsafeUninitializedCapacity: n * h) { buffer, initialized in
                    if n > 0 {
                        UnsafeMutableRawPointer(buffer.baseAddress!).copyMemory(
                            from: pinnedOut + row * h * 4, byteCount: n * h * 4)
                    }
                    initialized = n * h
                }
                row += n
                return Matrix(rows: n, columns: h, values: values)
            }
        }
    }

    /// Queues the grouped path; false (nothing queued) when it does not apply: experts of different forms or sizes,
    /// biases, int8/fp8 weights, or no grouped GEMM in this cuBLAS.
    private func encodeGrouped(
        _ kernels: [CUDAExpertKernel], counts: [Int], input: CUdeviceptr, output: CUdeviceptr, lane: CUDALane
    ) throws(CUDAError) -> Bool {
        guard self.usesGroupedGEMM, let first = kernels.first else { return false }
        let h = first.hiddenSize, i = first.intermediateSize
        let activation: Int32, gated: Bool
        switch first.form {
        case .gated(let code): (activation, gated) = (code, true)
        case .plain(let code): (activation, gated) = (code, false)
        case .clampedSwiGLU: return false
        }
        for kernel in kernels {
            guard kernel.hiddenSize == h, kernel.intermediateSize == i, kernel.precision == .bf16 else { return false }
            switch kernel.form {
            case .gated(let code) where gated && code == activation: continue
            case .plain(let code) where !gated && code == activation: continue
            default: return false
            }
        }
        let active = zip(kernels, counts).filter { $0.1 > 0 }
        let total = counts.reduce(0, +), width = gated ? 2 * i : i
        let hidden = try lane.buffer(.hidden, bytes: total * i * 2)
        let projected = gated ? try lane.buffer(.projected, bytes: total * width * 2) : hidden
        // Device arrays of pointers: A, B, C of the first GEMM, then of the second (C: bf16, widened after).
        let g = active.count
        var pointers: [UInt64] = []
        pointers.reserveCapacity(6 * g)
        var row = 0
        var rowsBefore: [Int] = []
        for (_, n) in active { rowsBefore.append(row); row += n }
        pointers += active.map { UInt64($0.0.firstProjection.values.address) }
        pointers += rowsBefore.map { UInt64(input) + UInt64($0 * h * 2) }
        pointers += rowsBefore.map { UInt64(projected) + UInt64($0 * width * 2) }
        pointers += active.map { UInt64($0.0.secondProjection.values.address) }
        pointers += rowsBefore.map { UInt64(hidden) + UInt64($0 * i * 2) }
        let outputBF16 = try lane.buffer(.outputBF16, bytes: total * h * 2)
        pointers += rowsBefore.map { UInt64(outputBF16) + UInt64($0 * h * 2) }
        let devicePointers = try lane.buffer(.pointerArrays, bytes: pointers.count * 8)
        try self.uploadPointers(pointers, to: devicePointers, lane: lane)
        let ns = active.map { Int32($0.1) }
        let firstQueued = try self.groupedGEMM(
            lane: lane, pointers: devicePointers, m: width, ns: ns, k: h, outputType: Int32(CCUDA_R_16BF))
        guard firstQueued else { return false }
        if gated {
            try self.device.launch(
                self.device.kernels.gatedActivation, count: total * i / 8, stream: lane.stream,
                [
                    .pointer(projected), .pointer(hidden), .int32(Int32(total)), .int32(Int32(i)), .int32(activation),
                ])
        } else {
            try self.device.launch(
                self.device.kernels.activationInPlace, count: total * i, stream: lane.stream,
                [
                    .pointer(hidden), .int64(Int64(total * i)), .int32(activation),
                ])
        }
        if try self.groupedGEMM(
            lane: lane, pointers: devicePointers + CUdeviceptr(3 * g * 8), m: h, ns: ns, k: i,
            outputType: Int32(CCUDA_R_16BF))
        {
            try self.device.launch(
                self.device.kernels.bf16ToF32, count: total * h, stream: lane.stream,
                [
                    .pointer(outputBF16), .pointer(output), .int64(Int64(total * h)),
                ])
        } else {
            // Refused after the first projection went through: the second one expert at a time.
            for ((kernel, n), before) in zip(active, rowsBefore) {
                try lane.matmul(
                    weights: kernel.secondProjection.values.address, input: hidden + CUdeviceptr(before * i * 2),
                    output: output + CUdeviceptr(before * h * 4), m: h, n: n, k: i, outputType: Int32(CCUDA_R_32F))
            }
        }
        return true
    }

    /// Copies GEMM pointer arrays to the device, synchronously: small, and the host array may go at once after.
    private func uploadPointers(_ pointers: [UInt64], to destination: CUdeviceptr, lane: CUDALane) throws(CUDAError) {
        let result = pointers.withUnsafeBytes { bytes in
            ccuda_cuMemcpyHtoDAsync(destination, bytes.baseAddress, bytes.count, lane.stream)
        }
        try CUDAError.check(result, "copying GEMM pointers")
        try lane.synchronize()
    }

    /// `C_j [n_j, m] = B_j [n_j, k] · A_jᵀ` for each group j; pointers: A's, then B's, then C's (device). False when
    /// cuBLAS does not support these types (remembered: later steps skip the grouped path).
    private func groupedGEMM(
        lane: CUDALane, pointers: CUdeviceptr, m: Int, ns: [Int32], k: Int, outputType: Int32
    ) throws(CUDAError) -> Bool {
        let g = ns.count
        let transA = [Int32](repeating: Int32(CCUBLAS_OP_T), count: g)
        let transB = [Int32](repeating: Int32(CCUBLAS_OP_N), count: g)
        let ms = [Int32](repeating: Int32(m), count: g), ks = [Int32](repeating: Int32(k), count: g)
        let lda = ks, ldb = ks, ldc = ms
        let alpha = [Float](repeating: 1, count: g), beta = [Float](repeating: 0, count: g)
        let sizes = [Int32](repeating: 1, count: g)
        let a = UnsafePointer<UnsafeRawPointer?>(bitPattern: UInt(pointers))
        let b = UnsafePointer<UnsafeRawPointer?>(bitPattern: UInt(pointers) + UInt(g * 8))
        let c = UnsafePointer<UnsafeMutableRawPointer?>(bitPattern: UInt(pointers) + UInt(2 * g * 8))
        let status = ccuda_cublasGemmGroupedBatchedEx(
            lane.blas, transA, transB, ms, ns, ks, alpha, a, Int32(CCUDA_R_16BF), lda, b, Int32(CCUDA_R_16BF), ldb,
            beta,
            c, outputType, ldc, Int32(g), sizes, Int32(CCUBLAS_COMPUTE_32F))
        // Not supported for these types (or sizes): use the per-expert path from now on.
        if status == Int32(CCUBLAS_STATUS_NOT_SUPPORTED) || status == Int32(CCUBLAS_STATUS_INVALID_VALUE) {
            self.groupedRefused.store(true, ordering: .relaxed)
            return false
        }
        try CUDAError.checkBLAS(status, "cublasGemmGroupedBatchedEx m=\(m) k=\(k), \(g) groups")
        return true
    }
}
