import CCUDA

/// One stream of a CUDA device and what work on it needs: a cuBLASLt handle and workspace, cached matmul plans,
/// and device and pinned buffers that grow to the largest batch seen. Used by one forward pass at a time.
final class CUDALane: @unchecked Sendable {
    let stream: CUstream
    private let context: CUcontext
    private let lt: cublasLtHandle_t
    let blas: cublasHandle_t
    private let workspace: DeviceMemory
    private var plans: [MatmulShape: MatmulPlan] = [:]
    private var buffers: [Buffer: DeviceMemory] = [:]
    private var pinned: [Buffer: PinnedMemory] = [:]
    let start: CUevent
    let end: CUevent

    /// Scratch buffers of a forward pass.
    enum Buffer: Hashable {
        case inputF32, input, projected, hidden, output, outputBF16, pointerArrays, dequantized
    }

    static let workspaceBytes = 32 << 20

    init(context: CUcontext) throws(CUDAError) {
        self.context = context
        var stream: CUstream?
        try CUDAError.check(ccuda_cuStreamCreate(&stream, UInt32(CCUDA_STREAM_NON_BLOCKING)), "creating a stream")
        self.stream = stream!
        var lt: cublasLtHandle_t?
        try CUDAError.checkBLAS(ccuda_cublasLtCreate(&lt), "cublasLtCreate")
        self.lt = lt!
        var blas: cublasHandle_t?
        try CUDAError.checkBLAS(ccuda_cublasCreate(&blas), "cublasCreate")
        try CUDAError.checkBLAS(ccuda_cublasSetStream(blas, stream), "cublasSetStream")
        self.blas = blas!
        self.workspace = try DeviceMemory(bytes: Self.workspaceBytes, context: context)
        var start: CUevent?, end: CUevent?
        try CUDAError.check(ccuda_cuEventCreate(&start, UInt32(CCUDA_EVENT_DEFAULT)), "cuEventCreate")
        try CUDAError.check(ccuda_cuEventCreate(&end, UInt32(CCUDA_EVENT_DEFAULT)), "cuEventCreate")
        self.start = start!
        self.end = end!
    }

    /// A device buffer of at least `bytes`, reallocated (contents lost) when smaller.
    func buffer(_ name: Buffer, bytes: Int) throws(CUDAError) -> CUdeviceptr {
        if let buffer = self.buffers[name], buffer.bytes >= bytes { return buffer.address }
        self.buffers[name] = nil
        let buffer = try DeviceMemory(bytes: bytes, context: self.context)
        self.buffers[name] = buffer
        return buffer.address
    }

    /// A pinned host buffer of at least `bytes` (`.inputF32` for rows in, `.output` for rows out).
    func pinnedBuffer(_ name: Buffer, bytes: Int) throws(CUDAError) -> UnsafeMutableRawPointer {
        if let buffer = self.pinned[name], buffer.bytes >= bytes { return buffer.pointer }
        self.pinned[name] = nil
        let buffer = try PinnedMemory(bytes: bytes, context: self.context)
        self.pinned[name] = buffer
        return buffer.pointer
    }

    /// `D [n, m] = X [n, k] · Wᵀ` (row-major; W `[m, k]` bf16, X bf16, D bf16 or f32), fp32 accumulation.
    ///
    /// In cuBLAS's column-major terms: `Dᵀ [m, n] = op_T(W) · Xᵀ`, the TN layout.
    func matmul(
        weights: CUdeviceptr, input: CUdeviceptr, output: CUdeviceptr, m: Int, n: Int, k: Int, outputType: Int32
    ) throws(CUDAError) {
        let shape = MatmulShape(m: m, n: n, k: k, outputType: outputType)
        let plan: MatmulPlan
        if let cached = self.plans[shape] {
            plan = cached
        } else {
            if self.plans.count >= 1024 { self.plans.removeAll() }
            plan = try MatmulPlan(shape: shape, lt: self.lt)
            self.plans[shape] = plan
        }
        var alpha: Float = 1, beta: Float = 0
        var algorithm = plan.heuristic.algo
        let status = ccuda_cublasLtMatmul(
            self.lt, plan.description, &alpha, UnsafeRawPointer(bitPattern: UInt(weights)), plan.a,
            UnsafeRawPointer(bitPattern: UInt(input)), plan.b, &beta, UnsafeRawPointer(bitPattern: UInt(output)),
            plan.d,
            UnsafeMutableRawPointer(bitPattern: UInt(output)), plan.d, &algorithm,
            UnsafeMutableRawPointer(bitPattern: UInt(self.workspace.address)), Self.workspaceBytes, self.stream)
        try CUDAError.checkBLAS(status, "cublasLtMatmul m=\(m) n=\(n) k=\(k)")
    }

    func synchronize() throws(CUDAError) {
        try CUDAError.check(ccuda_cuStreamSynchronize(self.stream), "waiting for the GPU")
    }
}

struct MatmulShape: Hashable {
    let m: Int, n: Int, k: Int
    let outputType: Int32
}

/// A cuBLASLt matmul's descriptors and the algorithm its heuristic chose, for one shape.
final class MatmulPlan {
    let description: cublasLtMatmulDesc_t
    let a: cublasLtMatrixLayout_t
    let b: cublasLtMatrixLayout_t
    let d: cublasLtMatrixLayout_t
    let heuristic: cublasLtMatmulHeuristicResult_t

    init(shape: MatmulShape, lt: cublasLtHandle_t) throws(CUDAError) {
        let what = "planning a bf16 matmul m=\(shape.m) n=\(shape.n) k=\(shape.k)"
        var description: cublasLtMatmulDesc_t?
        try CUDAError.checkBLAS(
            ccuda_cublasLtMatmulDescCreate(&description, Int32(CCUBLAS_COMPUTE_32F), Int32(CCUDA_R_32F)), what)
        var transposed = Int32(CCUBLAS_OP_T), plain = Int32(CCUBLAS_OP_N)
        try CUDAError.checkBLAS(
            ccuda_cublasLtMatmulDescSetAttribute(description, Int32(CCUBLASLT_MATMUL_DESC_TRANSA), &transposed, 4), what
        )
        try CUDAError.checkBLAS(
            ccuda_cublasLtMatmulDescSetAttribute(description, Int32(CCUBLASLT_MATMUL_DESC_TRANSB), &plain, 4), what)
        var a: cublasLtMatrixLayout_t?, b: cublasLtMatrixLayout_t?, d: cublasLtMatrixLayout_t?
        // W [m, k] row-major = [k, m] column-major; X [n, k] → [k, n]; D [n, m] → [m, n].
        try CUDAError.checkBLAS(
            ccuda_cublasLtMatrixLayoutCreate(&a, Int32(CCUDA_R_16BF), UInt64(shape.k), UInt64(shape.m), Int64(shape.k)),
            what)
        try CUDAError.checkBLAS(
            ccuda_cublasLtMatrixLayoutCreate(&b, Int32(CCUDA_R_16BF), UInt64(shape.k), UInt64(shape.n), Int64(shape.k)),
            what)
        try CUDAError.checkBLAS(
            ccuda_cublasLtMatrixLayoutCreate(&d, shape.outputType, UInt64(shape.m), UInt64(shape.n), Int64(shape.m)),
            what)
        var preference: cublasLtMatmulPreference_t?
        try CUDAError.checkBLAS(ccuda_cublasLtMatmulPreferenceCreate(&preference), what)
        defer { _ = ccuda_cublasLtMatmulPreferenceDestroy(preference) }
        var workspace = CUDALane.workspaceBytes
        try CUDAError.checkBLAS(
            ccuda_cublasLtMatmulPreferenceSetAttribute(
                preference, Int32(CCUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES), &workspace, MemoryLayout<Int>.size), what)
        var result = cublasLtMatmulHeuristicResult_t()
        var returned: Int32 = 0
        try CUDAError.checkBLAS(
            ccuda_cublasLtMatmulAlgoGetHeuristic(lt, description, a, b, d, d, preference, 1, &result, &returned), what)
        guard returned > 0 else { throw CUDAError("\(what): cuBLASLt has no algorithm for it") }
        self.description = description!
        self.a = a!
        self.b = b!
        self.d = d!
        self.heuristic = result
    }

    deinit {
        _ = ccuda_cublasLtMatrixLayoutDestroy(self.a)
        _ = ccuda_cublasLtMatrixLayoutDestroy(self.b)
        _ = ccuda_cublasLtMatrixLayoutDestroy(self.d)
        _ = ccuda_cublasLtMatmulDescDestroy(self.description)
    }
}
