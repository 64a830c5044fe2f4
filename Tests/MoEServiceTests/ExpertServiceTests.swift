import Foundation
import GRPCCore
import MoECore
import MoEKernels
import MoEModel
import MoEProto
import MoEServing
import MoETestSupport
import MoEWire
import Testing

@Suite("expert service (in-process transport)")
struct ExpertServiceTests {
    static func request(layer: String = "0", expert: Int32 = 1, rows: Moemesh_V1_Tensor) -> Moemesh_V1_ComputeRequest {
        var request = Moemesh_V1_ComputeRequest()
        request.layer = layer
        request.expert = expert
        request.rows = rows
        return request
    }

    @Test("Compute runs the expert's FFN, in the request's dtype", arguments: DType.allCases)
    func compute(dtype: DType) async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let kernel = CPUExpertKernel(weights: try checkpoint.expertWeights(layer: checkpoint.layer("1"), expert: 2))
        let rows = model.randomHidden(tokens: 5)
        // The service widens the wire values first: compute the expectation from the same widened rows.
        let widened = try Tensor(rows, dtype: dtype).matrix()
        let expected = kernel.forward(widened)
        try await withLoopbackMesh(model: model) { _, expert in
            let response = try await expert.compute(
                Self.request(layer: "1", expert: 2, rows: Moemesh_V1_Tensor(rows, dtype: dtype)))
            #expect(response.rows.dtype == Moemesh_V1_DType(dtype))
            #expect(response.rows.shape == [5, 32])
            let output = try response.rows.data.withUnsafeBytes { try Tensor(dtype: dtype, shape: [5, 32], bytes: $0) }
            let tolerance = dtype == .f32 ? 0.0 : 1e-2
            #expect(relativeError(output.floats(), expected.values) <= tolerance)
        }
    }

    @Test(
        "a Compute of several experts answers each expert's rows bitwise as a call of its own would, in order",
        arguments: [DType.f32, .bf16])
    func severalExperts(dtype: DType) async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let experts: [Int32] = [3, 0, 2]
        let counts = [2, 1, 4]
        let rows = counts.enumerated().map { index, count in model.randomHidden(tokens: count, seed: UInt64(10 + index))
        }
        try await withLoopbackMesh(model: model) { _, expert in
            var together = Self.request(
                layer: "1", expert: 0,
                rows: Moemesh_V1_Tensor(
                    Matrix(rows: counts.reduce(0, +), columns: 32, values: rows.flatMap(\.values)), dtype: dtype))
            together.experts = experts
            together.rowCounts = counts.map(UInt32.init)
            let answer = try await expert.compute(together)
            #expect(answer.rows.shape == [7, 32] && answer.rows.dtype == Moemesh_V1_DType(dtype))
            var alone = Data()
            for (index, id) in experts.enumerated() {
                let single = try await expert.compute(
                    Self.request(layer: "1", expert: id, rows: Moemesh_V1_Tensor(rows[index], dtype: dtype)))
                alone.append(single.rows.data)
            }
            #expect(answer.rows.data == alone)
        }
    }

    struct BadCall: Sendable, CustomTestStringConvertible {
        let name: String
        let request: Moemesh_V1_ComputeRequest
        let code: RPCError.Code
        let message: String
        var testDescription: String { self.name }
    }

    static let badCalls: [BadCall] = {
        let good = SmallModelRows.rows
        func several(_ experts: [Int32], _ counts: [UInt32]) -> Moemesh_V1_ComputeRequest {
            var request = request(rows: .rows(good))
            request.experts = experts
            request.rowCounts = counts
            return request
        }
        return [
            BadCall(
                name: "several experts, a count missing", request: several([1, 2], [3]), code: .invalidArgument,
                message: "experts names 2 experts but row_counts has 1 counts; expected one count per expert"),
            BadCall(
                name: "several experts, counts not summing to the rows", request: several([1, 2], [1, 1]),
                code: .invalidArgument, message: "row_counts [1, 1] must each be at least 1 and sum to the 3 rows sent"),
            BadCall(
                name: "several experts, an empty part", request: several([1, 2], [3, 0]), code: .invalidArgument,
                message: "row_counts [3, 0] must each be at least 1 and sum to the 3 rows sent"),
            BadCall(
                name: "several experts, one not hosted", request: several([1, 9], [1, 2]), code: .notFound,
                message: "layer 0 expert 9 is not hosted by this expert service"),
            BadCall(
                name: "wrong hidden size", request: request(rows: .raw(.f32, [2, 31], bytes: 248)),
                code: .invalidArgument, message: "rows: hidden size: expected 32, got 31"),
            BadCall(
                name: "data length not matching shape", request: request(rows: .raw(.f32, [2, 32], bytes: 255)),
                code: .invalidArgument, message: "rows: data length: expected 256 bytes for f32 [2, 32], got 255"),
            BadCall(
                name: "unknown expert", request: request(expert: 9, rows: .rows(good)),
                code: .notFound,
                message:
                    "layer 0 expert 9 is not hosted by this expert service; it hosts layer 0 experts 0-3, layer 1 experts 0-3"
            ),
            BadCall(
                name: "unknown layer", request: request(layer: "x", rows: .rows(good)),
                code: .notFound, message: "layer x expert 1 is not hosted"),
            BadCall(
                name: "empty batch", request: request(rows: .raw(.f32, [0, 32], bytes: 0)),
                code: .invalidArgument, message: "rows: empty batch: expected at least one token, got shape [0, 32]"),
            BadCall(
                name: "NaN", request: request(rows: .rows(good, replacing: 37)),
                code: .invalidArgument, message: "rows: expected finite values, got nan at token 1, column 5"),
            BadCall(
                name: "infinity", request: request(rows: .rows(good, replacing: 2, with: -.infinity)),
                code: .invalidArgument, message: "rows: expected finite values, got -inf at token 0, column 2"),
            BadCall(
                name: "rank 3", request: request(rows: .raw(.f32, [1, 2, 32], bytes: 256)),
                code: .invalidArgument, message: "rows: expected shape [N, 32], got [1, 2, 32]"),
            BadCall(
                name: "no tensor", request: request(rows: Moemesh_V1_Tensor()),
                code: .invalidArgument, message: "rows: expected a tensor with dtype f32, bf16 or f16, got none"),
            BadCall(
                name: "unknown dtype", request: request(rows: .raw(.unspecified, [2, 32], bytes: 256)),
                code: .invalidArgument, message: "rows: expected dtype f32, bf16 or f16, got DTYPE_UNSPECIFIED"),
        ]
    }()

    @Test("bad calls get a status that says what was expected, and the service keeps serving", arguments: badCalls)
    func badCall(call: BadCall) async throws {
        let model = try SmallModel()
        defer { model.remove() }
        try await withLoopbackMesh(model: model) { _, expert in
            do {
                _ = try await expert.compute(call.request)
                Issue.record("\(call.name): accepted")
            } catch let error as RPCError {
                #expect(error.code == call.code)
                #expect(error.message.hasPrefix(call.message), "\(error.message)")
            }
            let response = try await expert.compute(Self.request(rows: .rows(SmallModelRows.rows)))
            #expect(response.rows.shape == [3, 32])
        }
    }

    @Test("DescribeExperts lists what the service hosts")
    func describe() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        try await withLoopbackMesh(model: model) { _, expert in
            let description = try await expert.describeExperts(Moemesh_V1_DescribeExpertsRequest())
            #expect(description.modelType == "mixtral")
            #expect(description.hiddenSize == 32 && description.intermediateSize == 48)
            #expect(
                description.experts.map { "\($0.layer):\($0.expert)" } == [
                    "0:0", "0:1", "0:2", "0:3", "1:0", "1:1", "1:2", "1:3",
                ])
        }
    }
}

/// Three valid rows of width 32.
enum SmallModelRows {
    static let rows = Matrix(
        rows: 3, columns: 32, values: ModelSynthesizer.uniform(count: 96, scale: 1, seed: 42))
}
