import MoECore
import Testing

@Suite("gate probes: what tells one model's weights from another's")
struct GateProbesTests {
    static func gate(seed: UInt64, rows: Int = 4, columns: Int = 40) -> Matrix {
        var random = SplitMix64Generator(seed: seed)
        return Matrix(
            rows: rows, columns: columns, values: (0..<rows * columns).map { _ in Float(random.nextUnit()) - 0.5 })
    }

    @Test("the probe is W · p with p_j = ((j mod 17) − 8) / 8")
    func probeFormula() {
        let gate = Matrix(rows: 2, columns: 18, values: (0..<36).map { Float($0 < 18 ? 1 : ($0 == 35 ? 8 : 0)) })
        // Row 0: Σ p_j over j < 18 = (Σ_{r<17} (r − 8) + (0 − 8)) / 8 = −1; row 1: 8 · p_17 = 8 · (−8 / 8) = −8.
        #expect(GateProbes.probe(gate) == [-1, -8])
    }

    @Test("the same gate rounded to bf16 agrees; another gate or another expert count is named")
    func mismatch() {
        let gate = Self.gate(seed: 1)
        let ours = GateProbes(layers: [("0", GateProbes.probe(gate))])
        let rounded = Matrix(
            rows: gate.rows, columns: gate.columns,
            values: gate.values.map {
                HalfPrecision.float(fromBFloat16: HalfPrecision.bfloat16(from: $0))
            })
        #expect(ours.mismatch(GateProbes(layers: [("0", GateProbes.probe(rounded))]), source: "x") == nil)
        let other = GateProbes(layers: [("0", GateProbes.probe(Self.gate(seed: 2)))])
        #expect(ours.mismatch(other, source: "x")?.hasPrefix("layer 0: x's gate weights differ") == true)
        let fewer = GateProbes(layers: [("0", Array(GateProbes.probe(gate).prefix(3)))])
        #expect(ours.mismatch(fewer, source: "x") == "layer 0: x's gate has 3 experts, expected 4")
        #expect(ours.mismatch(GateProbes(layers: []), source: "x") == "x has no gate probe for MoE layer 0")
    }
}
