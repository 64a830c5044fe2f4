import GRPCCore
import GRPCNIOTransportHTTP2
import MoECore
import MoEDataPlane
import MoEModel
import MoEInProcess
import MoEProto
import MoERouter
import MoERuntime
import MoEServing
import MoETestSupport
import MoEWire
import Testing

@Suite("router service (in-process transport)")
struct RouterServiceTests {
    static func request(
        layer: String = "0", hidden: Moemesh_V1_Tensor, returnRouting: Bool = true
    ) -> Moemesh_V1_ForwardRequest {
        var request = Moemesh_V1_ForwardRequest()
        request.layer = layer
        request.hiddenStates = hidden
        request.returnRouting = returnRouting
        return request
    }

    @Test("Forward equals the in-process reference, routing included", arguments: [1, 7, 64], ["0", "1"])
    func matchesReference(tokens: Int, layer: String) async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        let hidden = model.randomHidden(tokens: tokens, seed: UInt64(tokens))
        let expected = try await reference.forward(layer: layer, hidden: hidden)
        try await withLoopbackMesh(model: model) { router, _ in
            let response = try await router.forward(
                Self.request(layer: layer, hidden: Moemesh_V1_Tensor(hidden, dtype: .f32)))
            let output = response.output.data.withUnsafeBytes { DType.f32.decodeFloats($0) }
            #expect(response.output.shape == [Int64(tokens), 32])
            #expect(relativeError(output, expected.output.values) <= 1e-6)
            #expect(response.routing.topK == 2)
            #expect(response.routing.topkIds == expected.routing.topkIDs)
            #expect(response.routing.topkWeights == expected.routing.topkWeights)
        }
    }

    @Test("[B, S, H] and bf16 inputs come back in the same shape and dtype")
    func shapeAndDTypeKept() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let hidden = model.randomHidden(tokens: 6)
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        let widened = try Tensor(hidden, dtype: .bf16).matrix()
        let expected = try await reference.forward(layer: "1", hidden: widened)
        try await withLoopbackMesh(model: model) { router, _ in
            let response = try await router.forward(
                Self.request(
                    layer: "1", hidden: Moemesh_V1_Tensor(hidden, shape: [2, 3, 32], dtype: .bf16), returnRouting: false
                ))
            #expect(response.output.dtype == .bf16)
            #expect(response.output.shape == [2, 3, 32])
            #expect(!response.hasRouting)
            let output = try response.output.data.withUnsafeBytes {
                try Tensor(dtype: .bf16, shape: [2, 3, 32], bytes: $0)
            }
            #expect(relativeError(output.floats(), expected.output.values) <= 1e-2)
        }
    }

    struct BadCall: Sendable, CustomTestStringConvertible {
        let name: String
        let request: Moemesh_V1_ForwardRequest
        let code: RPCError.Code
        let message: String
        var testDescription: String { self.name }
    }

    static let badCalls: [BadCall] = [
        BadCall(
            name: "wrong hidden size", request: request(hidden: .raw(.f32, [2, 33], bytes: 264)),
            code: .invalidArgument, message: "hidden_states: hidden size: expected 32, got 33"),
        BadCall(
            name: "data length not matching shape", request: request(hidden: .raw(.f32, [2, 32], bytes: 300)),
            code: .invalidArgument, message: "hidden_states: data length: expected 256 bytes for f32 [2, 32], got 300"),
        BadCall(
            name: "unknown layer", request: request(layer: "9", hidden: .rows(SmallModelRows.rows)),
            code: .notFound, message: "layer '9' is not an MoE layer of this model; MoE layers: 0, 1"),
        BadCall(
            name: "empty batch", request: request(hidden: .raw(.f32, [0, 32], bytes: 0)),
            code: .invalidArgument,
            message: "hidden_states: empty batch: expected at least one token, got shape [0, 32]"),
        BadCall(
            name: "empty [B, S, H] batch", request: request(hidden: .raw(.bf16, [4, 0, 32], bytes: 0)),
            code: .invalidArgument,
            message: "hidden_states: empty batch: expected at least one token, got shape [4, 0, 32]"),
        BadCall(
            name: "NaN in the input", request: request(hidden: .rows(SmallModelRows.rows, replacing: 70)),
            code: .invalidArgument, message: "hidden_states: expected finite values, got nan at token 2, column 6"),
        BadCall(
            name: "rank 1", request: request(hidden: .raw(.f32, [32], bytes: 128)),
            code: .invalidArgument, message: "hidden_states: expected shape [T, 32] or [B, S, 32], got [32]"),
        BadCall(
            name: "negative dimension", request: request(hidden: .raw(.f32, [-1, 32], bytes: 0)),
            code: .invalidArgument, message: "hidden_states: shape [-1, 32] has a negative dimension"),
        BadCall(
            name: "overflowing shape", request: request(hidden: .raw(.f32, [1 << 40, 1 << 40, 32], bytes: 0)),
            code: .invalidArgument, message: "hidden_states: shape [1099511627776, 1099511627776, 32] has more elements"
        ),
        // Found by FuzzWireTensor: 2^62 elements fit an Int, their 2^64 bytes do not (the router trapped).
        BadCall(
            name: "shape whose byte count exceeds Int.max",
            request: request(hidden: .raw(.f32, [1 << 60, 4], bytes: 0)),
            code: .invalidArgument,
            message: "hidden_states: shape [1152921504606846976, 4] has more elements than can be addressed"),
        BadCall(
            name: "missing hidden states", request: request(hidden: Moemesh_V1_Tensor()),
            code: .invalidArgument, message: "hidden_states: expected a tensor with dtype f32, bf16 or f16, got none"),
        BadCall(
            name: "token ids not one per token",
            request: {
                var forward = request(hidden: .rows(SmallModelRows.rows))
                forward.tokenIds = [4, 2]
                return forward
            }(),
            code: .invalidArgument, message: "token_ids: expected one per token (3) or none, got 2"),
        BadCall(
            name: "finite input whose expert output overflows",
            request: request(
                hidden: .rows(
                    Matrix(
                        rows: 3, columns: 32, values: SmallModelRows.rows.values.map { $0 < 0 ? -1e30 : 1e30 }))),
            code: .invalidArgument, message: "hidden_states refused by layer 0 expert "),
    ]

    @Test("bad input gets a status that says what was expected, and the router keeps serving", arguments: badCalls)
    func badInput(call: BadCall) async throws {
        let model = try SmallModel()
        defer { model.remove() }
        try await withLoopbackMesh(model: model) { router, _ in
            do {
                _ = try await router.forward(call.request)
                Issue.record("\(call.name): accepted")
            } catch let error as RPCError {
                #expect(error.code == call.code)
                #expect(error.message.hasPrefix(call.message), "\(error.message)")
                if call.name.contains("overflows") {
                    #expect(error.message.contains("overflowed to inf/NaN for inputs as large as |x| = 1e+30"))
                }
            }
            let response = try await router.forward(Self.request(hidden: .rows(SmallModelRows.rows)))
            #expect(response.output.shape == [3, 32])
        }
    }

    @Test("an unreachable expert gives UNAVAILABLE naming it, not a wrong answer")
    func unreachableExpert() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        // Port 1 on loopback: nothing listens there.
        let dead = ServiceEndpoint(host: "127.0.0.1", port: 1)
        do {
            let replica = ExpertReplica(
                endpoint: dead, channel: try DataPlaneChannel(target: dead.description), metadata: [:])
            let addresses = checkpoint.layers.flatMap { layer in
                (0..<layer.numExperts).map { ExpertAddress(layer: layer.name, expert: $0) }
            }
            let service = RouterService(
                modelType: checkpoint.modelType, hiddenSize: checkpoint.hiddenSize,
                pipelines: try checkpoint.layers.map { try MoELayerPipeline(checkpoint: checkpoint, layer: $0) },
                executor: RemoteExpertExecutor(
                    topology: ExpertTopology(
                        replicas: Dictionary(uniqueKeysWithValues: addresses.map { ($0, [replica]) })),
                    wireDType: .f32, expertTimeout: .seconds(2)))
            do {
                _ = try await service.forward(Self.request(hidden: .rows(SmallModelRows.rows)))
                Issue.record("answered without its experts")
            } catch let error as RouterError {
                #expect(error.rpcErrorCode == .unavailable)
                #expect(error.rpcErrorMessage.contains("layer 0 expert"))
                #expect(error.rpcErrorMessage.contains("at 127.0.0.1:1 is unavailable"))
            }
        }
    }

    @Test("DescribeModel lists the MoE layers")
    func describe() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        try await withLoopbackMesh(model: model) { router, _ in
            let description = try await router.describeModel(Moemesh_V1_DescribeModelRequest())
            #expect(description.modelType == "mixtral" && description.hiddenSize == 32)
            #expect(description.layers.map(\.name) == ["0", "1"])
            #expect(description.layers.allSatisfy { $0.numExperts == 4 && $0.topK == 2 })
        }
    }
}
