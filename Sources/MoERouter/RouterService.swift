import GRPCCore
import MoECore
import MoEModel
import MoEProto
import MoERuntime
import MoEServing

/// The public API: `Forward` runs one MoE layer (gate → dispatch → experts over gRPC → combine).
public struct RouterService: Sendable {
    public let modelType: String
    public let hiddenSize: Int
    /// Layer name → pipeline, and the layer names in model order.
    public let pipelines: [String: MoELayerPipeline]
    public let layerNames: [String]
    public let executor: any ExpertExecutor

    public init(modelType: String, hiddenSize: Int, pipelines: [MoELayerPipeline], executor: any ExpertExecutor) {
        self.modelType = modelType
        self.hiddenSize = hiddenSize
        self.pipelines = Dictionary(uniqueKeysWithValues: pipelines.map { ($0.spec.name, $0) })
        self.layerNames = pipelines.map(\.spec.name)
        self.executor = executor
    }

    /// Validates the request, runs the layer and encodes the answer in the request's dtype and shape.
    public func forward(_ request: Moemesh_V1_ForwardRequest) async throws -> Moemesh_V1_ForwardResponse {
        guard let pipeline = self.pipelines[request.layer] else {
            throw RouterError.unknownLayer(request.layer, known: self.layerNames)
        }
        let hidden: DecodedRows
        do {
            hidden = try request.hiddenStates.decodeTokenRows(
                field: "hidden_states", hiddenSize: self.hiddenSize, allowedRanks: [2, 3],
                shapeDescription: "[T, \(self.hiddenSize)] or [B, S, \(self.hiddenSize)]")
        } catch { throw RouterError.invalidInput(error) }

        let result = try await pipeline.forward(hidden.matrix, executor: self.executor)

        var response = Moemesh_V1_ForwardResponse()
        response.output = Moemesh_V1_Tensor(result.output, shape: hidden.shape, dtype: hidden.dtype)
        if request.returnRouting {
            response.routing.topK = Int32(result.routing.topK)
            response.routing.topkIds = result.routing.topkIDs
            response.routing.topkWeights = result.routing.topkWeights
        }
        return response
    }
}

extension RouterService: Moemesh_V1_Router.SimpleServiceProtocol {
    public func forward(
        request: Moemesh_V1_ForwardRequest, context: ServerContext
    ) async throws -> Moemesh_V1_ForwardResponse {
        try await self.forward(request)
    }

    public func describeModel(
        request: Moemesh_V1_DescribeModelRequest, context: ServerContext
    ) async throws -> Moemesh_V1_DescribeModelResponse {
        var response = Moemesh_V1_DescribeModelResponse()
        response.modelType = self.modelType
        response.hiddenSize = Int32(self.hiddenSize)
        response.layers = self.layerNames.map { name in
            let spec = self.pipelines[name]!.spec
            var layer = Moemesh_V1_MoELayer()
            layer.name = name
            layer.numExperts = Int32(spec.numExperts)
            layer.topK = Int32(spec.topK)
            return layer
        }
        return response
    }
}
