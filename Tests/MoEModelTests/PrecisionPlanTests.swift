import MoECore
import MoEModel
import Testing

@Suite("Precision plans (--precision)")
struct PrecisionPlanTests {
    static let layers = ["0", "1"].map {
        MoELayerSpec(
            name: $0, hiddenSize: 8, intermediateSize: 16, gate: TopKGate(numExperts: 4, topK: 2, renormalize: true),
            sharedExpert: .init(intermediateSize: 16, gated: true))
    }

    private func plan(_ text: String) throws -> PrecisionPlan { try PrecisionPlan.parse(text).get() }

    @Test("later items win; unnamed experts get nil (the device's default)")
    func laterItemsWin() throws {
        let plan = try self.plan("*:*=int8,0:3=bf16,1:shared=f32")
        #expect(plan.precision(of: ExpertAddress(layer: "0", expert: 3)) == .bf16)
        #expect(plan.precision(of: ExpertAddress(layer: "1", expert: 3)) == .int8)
        #expect(
            plan.precision(of: ExpertAddress(layer: "1", expert: ExpertAddress.shared)) == .f32)
        #expect(plan.namedPrecisions == [.int8, .bf16, .f32])
        let partial = try self.plan("1:0-1=int8")
        #expect(partial.precision(of: ExpertAddress(layer: "1", expert: 1)) == .int8)
        #expect(partial.precision(of: ExpertAddress(layer: "0", expert: 1)) == nil)
    }

    @Test("a bare precision applies to every expert")
    func barePrecision() throws {
        let plan = try self.plan("bf16")
        for address in Self.layers.flatMap(\.expertAddresses) {
            #expect(plan.precision(of: address) == .bf16)
        }
    }

    @Test(
        "malformed plans are refused with what was expected and what came",
        arguments: [
            ("*:*=int4", "expected LAYER:EXPERTS=PRECISION (PRECISION: f32, bf16, int8, fp8), got '*:*=int4'"),
            ("0:x=int8", "expected *, N, A-B or shared for the experts, got 'x'"),
            ("0=int8", "expected LAYER:EXPERTS, got '0'"),
            ("*:*=int8=bf16", "got '*:*=int8=bf16'"),
            ("", "got ''"),
        ])
    func malformed(text: String, reason: String) {
        guard case .failure(let error) = PrecisionPlan.parse(text) else {
            Issue.record("'\(text)' parsed")
            return
        }
        #expect(error.description.hasPrefix("precision '\(text)': "))
        #expect(error.description.contains(reason), "\(error)")
    }
}
