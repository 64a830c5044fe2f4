/// Elementwise math for the activation pass of expert FFNs, written as branch-free scalar code (no calls, no
/// conversions) so that the compiler vectorises the loops that use it.
public enum VectorMath {
    /// `e^x` within 2 ulp of the correctly rounded result for x in [−87.3, 88.7] (0 below, +inf above):
    /// `x = n·ln2 + r`, `|r| ≤ ln2/2`; `e^r` by a degree-6 polynomial (Cephes expf); `2^n` through the exponent bits,
    /// as `2^⌊n/2⌋ · 2^⌈n/2⌉` so that neither factor leaves the normal range.
    @inlinable @inline(__always)
    public static func exp(_ x: Float) -> Float {
        let clamped = Swift.min(Swift.max(x, -87.33654), 88.72283)
        // Adding 1.5·2²³ rounds to the nearest integer and leaves it in the low mantissa bits.
        let shifted = clamped * 1.442695041 + 12_582_912
        let whole = Int32(bitPattern: shifted.bitPattern) &- 0x4B40_0000
        let n = shifted - 12_582_912
        var r = clamped - n * 0.693359375
        r = r - n * -2.12194440e-4
        var p: Float = 1.9875691500e-4
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        let er = p * (r * r) + r + 1
        let half = whole &>> 1
        let low = Float(bitPattern: UInt32(bitPattern: (half &+ 127) &<< 23))
        let high = Float(bitPattern: UInt32(bitPattern: (whole &- half &+ 127) &<< 23))
        let result = er * low * high
        return x < -87.33654 ? 0 : (x > 88.72283 ? .infinity : result)
    }

    /// `z[i] = silu(a[i]) · b[i] = a[i] / (1 + e^{−a[i]}) · b[i]` for `count` elements.
    @inlinable
    public static func siluProduct(
        _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into z: UnsafeMutablePointer<Float>, count: Int
    ) {
        for index in 0..<count {
            let gate = a[index]
            z[index] = gate / (1 + Self.exp(-gate)) * b[index]
        }
    }
}
