import MoECore
import MoEKernels
import MoEModel
import MoERuntime

/// Runs experts in this process, one after another, with the CPU kernels.
public struct LocalExpertExecutor: ExpertExecutor {
    /// (layer, expert) → kernel.
    public let kernels: [ExpertAddress: CPUExpertKernel]

    public init(kernels: [ExpertAddress: CPUExpertKernel]) { self.kernels = kernels }

    public func compute(_ rows: ExpertRows) async throws -> Matrix {
        guard let kernel = self.kernels[rows.address] else {
            let hosted = self.kernels.keys.filter { $0.layer == rows.layer }.count
            throw ModelError.unknownExpert(layer: rows.layer, expert: rows.expert, numExperts: hosted)
        }
        return kernel.forward(rows.matrix())
    }
}

/// The in-process reference: a model's MoE layers computed without any network, with the same gate, plan,
/// kernels and combine as the mesh.
public struct InProcessMoE: Sendable {
    public let pipelines: [String: MoELayerPipeline]
    public let executor: LocalExpertExecutor

    /// Loads `layers` (all MoE layers when nil) of a checkpoint: gates and every expert, shared ones included, the
    /// experts' weights stored in `precision`.
    public init(
        checkpoint: MoECheckpoint, layers: [String]? = nil, policy: (MoELayerSpec) -> RoutingPolicy = { _ in .model },
        precision: WeightPrecision = .f32
    ) throws {
        var pipelines: [String: MoELayerPipeline] = [:]
        var kernels: [ExpertAddress: CPUExpertKernel] = [:]
        for name in layers ?? checkpoint.layers.map(\.name) {
            let spec = try checkpoint.layer(name)
            pipelines[name] = try MoELayerPipeline(checkpoint: checkpoint, layer: spec, policy: policy(spec))
            for address in spec.expertAddresses {
                let weights = try checkpoint.expertWeights(layer: spec, expert: address.expert)
                kernels[address] = try CPUExpertKernel(weights: weights, precision: precision)
            }
        }
        self.pipelines = pipelines
        self.executor = LocalExpertExecutor(kernels: kernels)
    }

    /// The layer's output for `hidden` (`[T, H]`).
    public func forward(layer: String, hidden: Matrix, request: RoutingRequest = .init()) async throws -> MoELayerResult
    {
        guard let pipeline = self.pipelines[layer] else {
            throw ModelError.unknownLayer(layer: layer, known: self.pipelines.keys.sorted())
        }
        return try await pipeline.forward(hidden, request: request, executor: self.executor)
    }
}
