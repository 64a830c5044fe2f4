import MoEKernels

/// The backend for `device`: opening a CUDA device throws `CUDAError` (saying what is missing) where there is none.
public func makeExpertBackend(_ device: ComputeDevice) throws -> any ExpertBackend {
    switch device {
    case .cpu: CPUExpertBackend()
    case .cuda(let ordinal): CUDAExpertBackend(device: try CUDADevice.open(ordinal: ordinal))
    }
}
