import MoECUDA
import MoECore
import MoEKernels
import Testing

/// Why the GPU tests below do not run here, or nil where a CUDA device opens.
private let noCUDA = CUDADevice.unavailableReason

@Suite("device selection and the CUDA backend")
struct CUDABackendTests {
    @Test("--device values: cpu, cuda, cuda:N; anything else refused")
    func parsesDevices() {
        #expect(ComputeDevice("cpu") == .cpu)
        #expect(ComputeDevice("cuda") == .cuda(ordinal: 0))
        #expect(ComputeDevice("cuda:3") == .cuda(ordinal: 3))
        for bad in ["gpu", "cuda:", "cuda:-1", "cuda:x", "CPU", "cuda0", ""] {
            #expect(ComputeDevice(bad) == nil, "\(bad)")
        }
        #expect(ComputeDevice.cuda(ordinal: 2).description == "cuda:2" && ComputeDevice.cpu.description == "cpu")
    }

    @Test("the CPU backend builds the OpenBLAS kernel and counts its f32 bytes")
    func cpuBackend() throws {
        let weights = ExpertWeights.gated(
            gate: Matrix(zeros: 4, 2), up: Matrix(zeros: 4, 2), down: Matrix(zeros: 2, 4), activation: .silu)
        let backend = try makeExpertBackend(.cpu)
        let (kernel, bytes) = try backend.makeKernel(weights)
        #expect(kernel is CPUExpertKernel && bytes == 3 * 8 * 4)
        #expect(backend.device == .cpu && backend.concurrency == 1 && backend.groupedStep == nil)
    }

    @Test(
        "asking for CUDA where there is none is a clear error naming what is missing",
        .enabled(if: noCUDA != nil, "a CUDA device opened here; this test checks the error where there is none"))
    func noDeviceError() throws {
        #expect(throws: CUDAError.self) { try makeExpertBackend(.cuda(ordinal: 0)) }
        do {
            _ = try makeExpertBackend(.cuda(ordinal: 0))
        } catch let error as CUDAError {
            // The reason is the device's own (what is missing, by name), not a generic failure.
            let reason = try #require(noCUDA)
            #expect(error.description.contains(reason), "\(error)")
            let missingLibrary = ["no CUDA driver: libcuda.so.1", "no cuBLASLt: ", "no cuBLAS: ", "no NVRTC: "]
                .contains { reason.hasPrefix($0) }
            #expect(missingLibrary || reason.contains("no CUDA-capable device"), "\(reason)")
        }
    }

    @Test(
        "GPU: every expert form matches the CPU backend within 1e-2 (grouped step, concurrent streams, paging)",
        .enabled(if: noCUDA == nil, "no CUDA device: \(noCUDA ?? "")"))
    func matchesCPU() throws {
        let device = try CUDADevice.open(ordinal: 0)
        let results = try CUDABackendCheck.run(device: device)
        #expect(results.count > 20)
        for result in results { #expect(result.passed, "\(result)") }
    }

    @Test(
        "GPU: the CUDA backend's kernels give the CPU kernel's answer through the ExpertKernel interface",
        .enabled(if: noCUDA == nil, "no CUDA device: \(noCUDA ?? "")"))
    func backendInterface() throws {
        let backend = try makeExpertBackend(.cuda(ordinal: 0))
        let values: [Float] = (0..<(64 * 32)).map { (index: Int) -> Float in Float((index * 7919) % 200) / 100 - 1 }
        let weights = ExpertWeights.gated(
            gate: Matrix(rows: 64, columns: 32, values: values.map { $0 / 6 }),
            up: Matrix(rows: 64, columns: 32, values: values.reversed().map { $0 / 6 }),
            down: Matrix(rows: 32, columns: 64, values: values.map { $0 / 8 }), activation: .silu)
        let (kernel, bytes) = try backend.makeKernel(weights)
        #expect(bytes == 3 * 64 * 32 * 2)
        let rowValues: [Float] = (0..<96).map { (index: Int) -> Float in Float(index % 11) / 5 - 1 }
        let rows = Matrix(rows: 3, columns: 32, values: rowValues)
        let gpu = try kernel.forward(rows), cpu = CPUExpertKernel(weights: weights).forward(rows)
        // bf16 on the device: each of the three products rounds both operands to 8 significant bits (2^-9 relative
        // each), up to 3 · 2 · 2^-9 ≈ 1.2% on the output against f32; measured 1.05% on the emulated device.
        #expect(gpu.relativeError(to: cpu) < 2e-2)
    }
}
