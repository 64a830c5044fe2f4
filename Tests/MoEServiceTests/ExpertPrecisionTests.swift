import MoECore
import MoEExpert
import MoEKernels
import MoEModel
import MoEProto
import MoETestSupport
import MoEWire
import Testing

@Suite("expert service precisions (--precision)")
struct ExpertPrecisionTests {
    @Test("each hosted expert is stored and computed in the precision the plan gives it, and says so")
    func perExpertPrecision() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let plan = try PrecisionPlan.parse("*:*=int8,0:1=bf16,1:2=f32").get()
        let addresses = checkpoint.layers.flatMap(\.expertAddresses)
        let service = try ExpertService(checkpoint: checkpoint, experts: addresses, precisions: plan)
        for address in addresses {
            let expected: WeightPrecision =
                address == ExpertAddress(layer: "0", expert: 1)
                ? .bf16 : address == ExpertAddress(layer: "1", expert: 2) ? .f32 : .int8
            #expect(service.precisions[address] == expected)
        }
        #expect(service.precisionMessages.count == addresses.count)
        #expect(
            service.precisionMessages.first { $0.expert.address == ExpertAddress(layer: "0", expert: 1) }?.precision
                == "bf16")
        #expect(
            service.precisionSummary
                == "bf16: layer 0 experts 1; f32: layer 1 experts 2; int8: layer 0 experts 0, 2-3, layer 1 experts 0-1, 3"
        )
        // An int8 expert answers as an int8 kernel of its weights does, within 2e-2 of f32.
        let rows = model.randomHidden(tokens: 4)
        var request = Moemesh_V1_ComputeRequest()
        (request.layer, request.expert, request.rows) = ("0", 2, Moemesh_V1_Tensor(rows, dtype: .f32))
        let response = try await service.compute(request)
        let output = try response.rows.data.withUnsafeBytes { try Tensor(dtype: .f32, shape: [4, 32], bytes: $0) }
        let weights = try checkpoint.expertWeights(layer: checkpoint.layer("0"), expert: 2)
        let int8 = try CPUExpertKernel(weights: weights, precision: .int8).forward(rows)
        #expect(output.floats() == int8.values)
        #expect(relativeError(output.floats(), CPUExpertKernel(weights: weights).forward(rows).values) < 2e-2)
    }

    @Test("the router's DescribeModel lists each expert's precision with its replica count")
    func describeModelListsPrecisions() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let plan = try PrecisionPlan.parse("*:*=int8,1:0-1=bf16").get()
        try await withLoopbackMesh(model: model, precisions: plan) { router, _ in
            let description = try await router.describeModel(Moemesh_V1_DescribeModelRequest())
            let listed = description.expertPrecisions.map {
                "\(ExpertAddress(layer: $0.layer, expert: Int($0.expert)))=\($0.precision)×\($0.replicas)"
            }
            let expected = (0..<2).flatMap { layer in
                (0..<4).map { expert in
                    "\(ExpertAddress(layer: "\(layer)", expert: expert))=\(layer == 1 && expert < 2 ? "bf16" : "int8")×1"
                }
            }
            #expect(listed == expected)
        }
    }

    @Test("fp8 on the CPU is refused at start, saying what to choose instead")
    func fp8RefusedOnCPU() throws {
        let model = try SmallModel()
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        do {
            _ = try ExpertService(
                checkpoint: checkpoint, experts: checkpoint.layers.flatMap(\.expertAddresses),
                precisions: try PrecisionPlan.parse("0:*=fp8").get())
            Issue.record("fp8 on the CPU was accepted")
        } catch {
            #expect(
                "\(error)"
                    == "--precision: fp8 weights need a CUDA device (`--device cuda`); on the CPU choose f32, bf16 or int8"
            )
        }
    }
}
