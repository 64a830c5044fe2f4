import RealModule
import Testing

@testable import MoEKernels

@Suite("vectorised activation math")
struct VectorMathTests {
    @Test("exp is within 2 ulp of the f64 result over the whole useful range")
    func expAccuracy() {
        var worst = 0.0
        var x: Float = -87
        while x < 88.5 {
            let got = VectorMath.exp(x)
            let want = Double.exp(Double(x))
            if want.isFinite, want < Double(Float.greatestFiniteMagnitude) {
                worst = max(worst, abs(Double(got) - want) / (want * Double(Float.ulpOfOne)))
            }
            x += 0.0137
        }
        #expect(worst <= 2, "worst error \(worst) ulp")
        #expect(VectorMath.exp(-200) == 0)
        #expect(VectorMath.exp(200) == .infinity)
        #expect(VectorMath.exp(0) == 1)
    }

    @Test("siluProduct equals the scalar definition, tail included", arguments: [1, 15, 16, 17, 100])
    func siluProduct(count: Int) {
        let a = (0..<count).map { Float($0) * 0.37 - 9 }, b = (0..<count).map { Float($0 % 7) - 3 }
        var z = [Float](repeating: 0, count: count)
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                z.withUnsafeMutableBufferPointer {
                    VectorMath.siluProduct(a.baseAddress!, b.baseAddress!, into: $0.baseAddress!, count: count)
                }
            }
        }
        for index in 0..<count {
            let want = Double(a[index]) / (1 + Double.exp(-Double(a[index]))) * Double(b[index])
            #expect(abs(Double(z[index]) - want) <= 1e-6 * max(1, abs(want)))
        }
    }
}
