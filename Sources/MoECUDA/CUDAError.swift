import CCUDA

/// A CUDA failure: the libraries or device missing, or a call that failed, with what was being done.
public struct CUDAError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String

    public init(_ description: String) { self.description = description }

    /// Opens the driver, cuBLAS(Lt) and NVRTC once (dlopen); throws saying which is missing.
    static func loadLibraries() throws(CUDAError) {
        var buffer = [CChar](repeating: 0, count: 1024)
        guard ccuda_load(&buffer, buffer.count) == 0 else {
            throw CUDAError(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
    }

    /// Throws unless a driver call returned CUDA_SUCCESS.
    static func check(_ result: CUresult, _ what: @autoclosure () -> String) throws(CUDAError) {
        guard result != 0 else { return }
        var text: UnsafePointer<CChar>?
        _ = ccuda_cuGetErrorString(result, &text)
        throw CUDAError("\(what()): \(text.map { String(cString: $0) } ?? "CUDA error \(result)") (\(result))")
    }

    /// Throws unless a cuBLAS(Lt) call returned CUBLAS_STATUS_SUCCESS.
    static func checkBLAS(_ status: cublasStatus_t, _ what: @autoclosure () -> String) throws(CUDAError) {
        guard status != 0 else { return }
        let text = ccuda_cublasLtGetStatusString(status).map { String(cString: $0) } ?? "cuBLAS status \(status)"
        throw CUDAError("\(what()): \(text) (\(status))")
    }

    static func checkNVRTC(_ result: nvrtcResult, _ what: @autoclosure () -> String) throws(CUDAError) {
        guard result != 0 else { return }
        let text = ccuda_nvrtcGetErrorString(result).map { String(cString: $0) } ?? "NVRTC error \(result)"
        throw CUDAError("\(what()): \(text)")
    }
}

/// Device memory, freed when the last reference goes.
final class DeviceMemory: @unchecked Sendable {
    let address: CUdeviceptr
    let bytes: Int
    private let context: CUcontext

    init(bytes: Int, context: CUcontext) throws(CUDAError) {
        var address: CUdeviceptr = 0
        ccuda_cuCtxSetCurrent(context)
        try CUDAError.check(ccuda_cuMemAlloc(&address, max(bytes, 1)), "allocating \(bytes) bytes of GPU memory")
        self.address = address
        self.bytes = bytes
        self.context = context
    }

    /// Copies `count` host values in (synchronous).
    func upload<T>(_ values: UnsafeBufferPointer<T>, at offset: Int = 0) throws(CUDAError) {
        let bytes = values.count * MemoryLayout<T>.stride
        precondition(offset + bytes <= self.bytes)
        ccuda_cuCtxSetCurrent(self.context)
        try CUDAError.check(
            ccuda_cuMemcpyHtoD(self.address + CUdeviceptr(offset), values.baseAddress, bytes),
            "copying weights to the GPU")
    }

    deinit {
        ccuda_cuCtxSetCurrent(self.context)
        _ = ccuda_cuMemFree(self.address)
    }
}

/// Page-locked host memory (fast, asynchronous copies).
final class PinnedMemory: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
    let bytes: Int

    init(bytes: Int, context: CUcontext) throws(CUDAError) {
        var pointer: UnsafeMutableRawPointer?
        ccuda_cuCtxSetCurrent(context)
        try CUDAError.check(
            ccuda_cuMemHostAlloc(&pointer, max(bytes, 1), UInt32(CCUDA_MEMHOSTALLOC_PORTABLE)),
            "allocating \(bytes) bytes of pinned host memory")
        self.pointer = pointer!
        self.bytes = bytes
    }

    deinit { _ = ccuda_cuMemFreeHost(self.pointer) }
}

/// One argument of a kernel launch, as the kernel's C parameter type.
enum KernelArgument {
    case pointer(CUdeviceptr)
    case int32(Int32)
    case int64(Int64)
    case uint64(UInt64)
    case float(Float)
}
