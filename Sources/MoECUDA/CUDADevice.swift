import CCUDA
import MoECore
import MoEKernels
import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// One CUDA device, opened once per process: its primary context, the kernels (compiled with NVRTC for its
/// architecture) and a pool of lanes (a stream each, with its cuBLASLt handle, workspace and buffers), so that
/// concurrent forward passes overlap.
public final class CUDADevice: @unchecked Sendable {
    public let ordinal: Int
    public let name: String
    /// Compute capability, as `major * 10 + minor` (90 for Hopper).
    public let computeCapability: Int
    public let totalMemoryBytes: Int
    /// The memory's peak bandwidth from its clock and bus width (H100 SXM: 3.35 TB/s), nil where the driver does not
    /// say.
    public let peakMemoryBytesPerSecond: Double?
    public let multiprocessors: Int
    let context: CUcontext
    let kernels: Kernels
    private let lanes: Mutex<[CUDALane]>
    private let freeLanes: DispatchSemaphore
    public let laneCount: Int

    /// The launchable kernels of `expert_kernels.cu`.
    struct Kernels: @unchecked Sendable {
        let f32ToBF16: CUfunction
        let bf16ToF32: CUfunction
        let gatedActivation: CUfunction
        let clampedSwiGLU: CUfunction
        let activationInPlace: CUfunction
        let addBias: CUfunction
        let fillUniformBF16: CUfunction
        let quantizedMatmul: CUfunction
        let dequantizeToBF16: CUfunction
        let fillRandomBytes: CUfunction
    }

    private static let opened = Mutex<[Int: CUDADevice]>([:])

    /// Opens device `ordinal` (once; later calls return the same device). Throws, saying why, where there is no
    /// CUDA driver, no such device, or the libraries are missing.
    public static func open(ordinal: Int, lanes: Int = 4) throws(CUDAError) -> CUDADevice {
        try Self.opened.withLock { (opened) throws(CUDAError) -> CUDADevice in
            if let device = opened[ordinal] { return device }
            let device = try CUDADevice(ordinal: ordinal, lanes: lanes)
            opened[ordinal] = device
            return device
        }
    }

    /// Whether a CUDA device can be opened here; nil, or the reason it cannot (for skipping GPU tests).
    public static var unavailableReason: String? {
        do {
            _ = try Self.open(ordinal: 0)
            return nil
        } catch {
            return error.description
        }
    }

    private init(ordinal: Int, lanes laneCount: Int) throws(CUDAError) {
        try CUDAError.loadLibraries()
        try CUDAError.check(ccuda_cuInit(0), "cuInit")
        var count: Int32 = 0
        try CUDAError.check(ccuda_cuDeviceGetCount(&count), "counting CUDA devices")
        guard ordinal < count else {
            throw CUDAError(
                "cuda:\(ordinal): expected a device ordinal below \(count), the number of CUDA devices here")
        }
        var device: CUdevice = 0
        try CUDAError.check(ccuda_cuDeviceGet(&device, Int32(ordinal)), "cuDeviceGet(\(ordinal))")
        var nameBuffer = [CChar](repeating: 0, count: 256)
        try CUDAError.check(ccuda_cuDeviceGetName(&nameBuffer, 256, device), "cuDeviceGetName")
        func attribute(_ attribute: Int32) throws(CUDAError) -> Int {
            var value: Int32 = 0
            try CUDAError.check(
                ccuda_cuDeviceGetAttribute(&value, attribute, device), "cuDeviceGetAttribute(\(attribute))")
            return Int(value)
        }
        let major = try attribute(Int32(CCUDA_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR))
        let minor = try attribute(Int32(CCUDA_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR))
        self.multiprocessors = try attribute(Int32(CCUDA_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT))
        // Double data rate: bytes/s = 2 · clock (kHz) · 1000 · bus bits / 8. Drivers that no longer report the
        // clock leave the peak unknown.
        let memoryClockKHz = try? attribute(Int32(CCUDA_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE))
        let busBits = try? attribute(Int32(CCUDA_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH))
        if let memoryClockKHz, let busBits, memoryClockKHz > 0, busBits > 0 {
            self.peakMemoryBytesPerSecond = 2 * Double(memoryClockKHz) * 1000 * Double(busBits) / 8
        } else {
            self.peakMemoryBytesPerSecond = nil
        }
        var total = 0
        try CUDAError.check(ccuda_cuDeviceTotalMem(&total, device), "cuDeviceTotalMem")
        var context: CUcontext?
        try CUDAError.check(ccuda_cuDevicePrimaryCtxRetain(&context, device), "retaining the primary context")
        try CUDAError.check(ccuda_cuCtxSetCurrent(context), "cuCtxSetCurrent")
        self.ordinal = ordinal
        self.name = String(decoding: nameBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        self.computeCapability = major * 10 + minor
        self.totalMemoryBytes = total
        self.context = context!
        self.kernels = try Self.compileKernels(major: major, minor: minor)
        var lanes: [CUDALane] = []
        for _ in 0..<max(1, laneCount) { lanes.append(try CUDALane(context: self.context)) }
        self.laneCount = lanes.count
        self.lanes = Mutex(lanes)
        self.freeLanes = DispatchSemaphore(value: lanes.count)
    }

    /// Compiles `expert_kernels.cu` to PTX for this device's architecture and loads it.
    private static func compileKernels(major: Int, minor: Int) throws(CUDAError) -> Kernels {
        var program: nvrtcProgram?
        try CUDAError.checkNVRTC(
            ccuda_nvrtcCreateProgram(&program, cudaKernelSource, "expert_kernels.cu"), "creating the NVRTC program")
        defer { _ = ccuda_nvrtcDestroyProgram(&program) }
        let options = ["--gpu-architecture=compute_\(major)\(minor)", "-default-device"]
        let compiled = options.withCStrings { ccuda_nvrtcCompileProgram(program, Int32(options.count), $0) }
        if compiled != 0 {
            var logSize = 0
            _ = ccuda_nvrtcGetProgramLogSize(program, &logSize)
            var log = [CChar](repeating: 0, count: logSize + 1)
            _ = ccuda_nvrtcGetProgramLog(program, &log)
            throw CUDAError("compiling the CUDA kernels (NVRTC, compute_\(major)\(minor)): \(String(cString: log))")
        }
        var ptxSize = 0
        try CUDAError.checkNVRTC(ccuda_nvrtcGetPTXSize(program, &ptxSize), "nvrtcGetPTXSize")
        var ptx = [CChar](repeating: 0, count: ptxSize + 1)
        try CUDAError.checkNVRTC(ccuda_nvrtcGetPTX(program, &ptx), "nvrtcGetPTX")
        var module: CUmodule?
        try CUDAError.check(ccuda_cuModuleLoadData(&module, ptx), "loading the kernels' PTX")
        func function(_ name: String) throws(CUDAError) -> CUfunction {
            var function: CUfunction?
            try CUDAError.check(ccuda_cuModuleGetFunction(&function, module, name), "finding kernel \(name)")
            return function!
        }
        return Kernels(
            f32ToBF16: try function("f32_to_bf16"), bf16ToF32: try function("bf16_to_f32"),
            gatedActivation: try function("gated_activation"),
            clampedSwiGLU: try function("clamped_swiglu"), activationInPlace: try function("activation_in_place"),
            addBias: try function("add_bias"), fillUniformBF16: try function("fill_uniform_bf16"),
            quantizedMatmul: try function("quantized_matmul"), dequantizeToBF16: try function("dequantize_to_bf16"),
            fillRandomBytes: try function("fill_random_bytes"))
    }

    /// "NVIDIA H100 80GB HBM3 (cuda:0, sm_90, 132 SMs, 79 GiB at 3.35 TB/s, driver CUDA 13.0, 4 streams; libcuda.so.1, …)".
    public var summary: String {
        var version: Int32 = 0
        _ = ccuda_cuDriverGetVersion(&version)
        return "\(self.name) (cuda:\(self.ordinal), sm_\(self.computeCapability), \(self.multiprocessors) SMs, "
            + "\(self.totalMemoryBytes >> 30) GiB"
            + (self.peakMemoryBytesPerSecond.map { " at \(DecimalFormat.fixed($0 / 1e12, 2)) TB/s" } ?? "")
            + ", driver CUDA \(version / 1000).\(version % 1000 / 10), "
            + "\(self.laneCount) streams; \(String(cString: ccuda_loaded_libraries())))"
    }

    /// Free and total device memory, in bytes.
    public var memoryInfo: (free: Int, total: Int) {
        ccuda_cuCtxSetCurrent(self.context)
        var free = 0, total = 0
        _ = ccuda_cuMemGetInfo(&free, &total)
        return (free, total)
    }

    func allocate(bytes: Int) throws(CUDAError) -> DeviceMemory {
        try DeviceMemory(bytes: bytes, context: self.context)
    }

    /// Runs `body` on a free lane (waiting for one), with this device's context current on the calling thread.
    func withLane<Result>(_ body: (CUDALane) throws(CUDAError) -> Result) throws(CUDAError) -> Result {
        self.freeLanes.wait()
        let lane = self.lanes.withLock { $0.removeLast() }
        defer {
            self.lanes.withLock { $0.append(lane) }
            self.freeLanes.signal()
        }
        ccuda_cuCtxSetCurrent(self.context)
        return try body(lane)
    }

    /// Launches `function` over `count` elements (256 threads a block, grid-stride loops) on `stream`.
    func launch(_ function: CUfunction, count: Int, stream: CUstream, _ arguments: [KernelArgument]) throws(CUDAError) {
        let blocks = UInt32(max(1, min((count + 255) / 256, self.multiprocessors * 16)))
        let storage = UnsafeMutableRawPointer.allocate(byteCount: 8 * arguments.count, alignment: 8)
        defer { storage.deallocate() }
        var pointers: [UnsafeMutableRawPointer?] = []
        for (index, argument) in arguments.enumerated() {
            let slot = storage + 8 * index
            switch argument {
            case .pointer(let value): slot.storeBytes(of: value, as: CUdeviceptr.self)
            case .int32(let value): slot.storeBytes(of: value, as: Int32.self)
            case .int64(let value): slot.storeBytes(of: value, as: Int64.self)
            case .uint64(let value): slot.storeBytes(of: value, as: UInt64.self)
            case .float(let value): slot.storeBytes(of: value, as: Float.self)
            }
            pointers.append(slot)
        }
        let result = pointers.withUnsafeMutableBufferPointer { pointers in
            ccuda_cuLaunchKernel(function, blocks, 1, 1, 256, 1, 1, 0, stream, pointers.baseAddress, nil)
        }
        try CUDAError.check(result, "launching a kernel over \(count) elements")
    }
}

extension Array where Element == String {
    /// Calls `body` with the strings as a C array of C strings.
    func withCStrings<Result>(_ body: (UnsafePointer<UnsafePointer<CChar>?>) -> Result) -> Result {
        let copies = self.map { strdup($0) }
        defer { copies.forEach { free($0) } }
        let pointers = copies.map { UnsafePointer($0) }
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}
