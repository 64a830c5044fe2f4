import MoECore
import MoEModel
import MoEInProcess
import MoERuntime
import MoETestSupport
import Testing

@Suite("quantize-report")
struct QuantizationReportTests {
    @Test(
        "every expert and layer of a golden checkpoint, per precision: bf16 ≤ 1e-2, int8 ≤ 2e-2, fp8 ≤ 6e-2, first layer's routing unchanged"
    )
    func goldenMixtral() async throws {
        let checkpoint = try MoECheckpoint(path: GoldenFixture.folder + "/mixtral-f32")
        let result = try await QuantizationReport.run(
            checkpoint: checkpoint, configurations: [.uniform(.bf16), .uniform(.int8), .uniform(.fp8)], tokens: 64)
        let experts = checkpoint.layers.flatMap(\.expertAddresses)
        // e4m3 keeps 3 mantissa bits (int8 about 7 at a row's largest weights): a few percent.
        let bound: [WeightPrecision: Double] = [.bf16: 1e-2, .int8: 2e-2, .fp8: 6e-2]
        #expect(result.experts.count == 3 * experts.count)
        for row in result.experts {
            #expect(row.relativeError > 0 && row.relativeError <= bound[row.precision]!)
            #expect(row.bytes * (row.precision == .bf16 ? 2 : 3) <= row.f32Bytes + row.f32Bytes / 10)
        }
        #expect(result.layers.count == 3 * checkpoint.layers.count)
        for row in result.layers {
            #expect(row.relativeError > 0 && row.relativeError <= bound[WeightPrecision(rawValue: row.configuration)!]!)
        }
        // The first layer sees the same input in both chains, and its gate is f32: the same experts.
        #expect(result.layers.filter { $0.layer == checkpoint.layers[0].name }.allSatisfy { $0.routingUnchanged == 1 })
    }

    @Test("a per-expert plan measures each expert once, in its own precision")
    func plan() async throws {
        let model = try SmallModel()
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let plan = try PrecisionPlan.parse("*:*=int8,0:0=bf16").get()
        let result = try await QuantizationReport.run(
            checkpoint: checkpoint, configurations: [.init(name: "mixed", plan: plan)], tokens: 16)
        #expect(result.experts.count == checkpoint.layers.flatMap(\.expertAddresses).count)
        #expect(
            result.experts.filter { $0.precision == .bf16 }.map(\.address) == [ExpertAddress(layer: "0", expert: 0)])
        #expect(result.layers.map(\.configuration) == ["mixed", "mixed"])
    }
}
