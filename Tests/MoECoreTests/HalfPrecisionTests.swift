import Testing

@testable import MoECore

@Suite("bf16 and f16 conversions")
struct HalfPrecisionTests {
    @Test("bf16 round-trips every value it can represent")
    func bfloat16RoundTrip() {
        for bits in stride(from: 0, through: UInt16.max, by: 7) {
            let value = HalfPrecision.float(fromBFloat16: bits)
            if value.isNaN { continue }
            #expect(HalfPrecision.bfloat16(from: value) == bits)
        }
    }

    @Test(
        "f32 → bf16 rounds to nearest even",
        arguments: [
            // 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties to even (1.0).
            (Float(1) + Float.ulpOfOne * 32768, UInt16(0x3F80)),
            // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: ties to even (up).
            (Float(1) + Float.ulpOfOne * 98304, UInt16(0x3F82)),
            (Float(-2.5), UInt16(0xC020)),
            (Float.infinity, UInt16(0x7F80)),
        ])
    func bfloat16Rounding(value: Float, expected: UInt16) {
        #expect(HalfPrecision.bfloat16(from: value) == expected)
    }

    @Test("NaN stays NaN in bf16")
    func bfloat16NaN() {
        #expect(HalfPrecision.float(fromBFloat16: HalfPrecision.bfloat16(from: .nan)).isNaN)
    }

    @Test(
        "f16 conversions are IEEE binary16",
        arguments: [
            (Float(1), UInt16(0x3C00)), (Float(-2), UInt16(0xC000)),
            (Float(65504), UInt16(0x7BFF)), (Float(1e6), UInt16(0x7C00)),
        ])
    func float16(value: Float, bits: UInt16) {
        #expect(HalfPrecision.float16(from: value) == bits)
        if value.isFinite && value <= 65504 { #expect(HalfPrecision.float(fromFloat16: bits) == value) }
    }

    @Test("tensors convert between dtypes through their bytes", arguments: DType.allCases)
    func tensorBytesRoundTrip(dtype: DType) throws {
        let values: [Float] = [0, 1, -1.5, 0.25, 1024, -0.0078125]
        let tensor = try Tensor(shape: [2, 3], floats: values, dtype: dtype)
        #expect(tensor.dtype == dtype)
        let bytes = tensor.bytes()
        #expect(bytes.count == 6 * dtype.byteWidth)
        let decoded = try bytes.withUnsafeBytes { try Tensor(dtype: dtype, shape: [2, 3], bytes: $0) }
        #expect(decoded == tensor)
        #expect(decoded.floats() == values)  // every value above is exact in all three formats
        #expect(decoded.converted(to: .f32).floats() == values)
    }

    @Test("a byte count that does not match the shape is refused with both numbers")
    func byteCountMismatch() {
        let bytes = [UInt8](repeating: 0, count: 4095)
        #expect(throws: TensorError.byteCount(dtype: .f32, shape: [1, 1024], expected: 4096, got: 4095)) {
            try bytes.withUnsafeBytes { try Tensor(dtype: .f32, shape: [1, 1024], bytes: $0) }
        }
        let message = TensorError.byteCount(dtype: .f32, shape: [1, 1024], expected: 4096, got: 4095).description
        #expect(message == "data length: expected 4096 bytes for f32 [1, 1024], got 4095")
    }

    @Test("negative dimensions are refused")
    func negativeDimension() {
        #expect(throws: TensorError.negativeDimension(shape: [2, -1])) {
            try Tensor(shape: [2, -1], floats: [])
        }
    }
}
