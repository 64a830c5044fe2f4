extension DType {
    /// Widens `count` elements of this dtype from little-endian `source` bytes into `destination` (f32).
    /// - Precondition: `source.count == count · byteWidth`, `destination.count == count`.
    public func decode(_ source: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>) {
        precondition(source.count == destination.count * self.byteWidth, "byte count does not match element count")
        let count = destination.count
        switch self {
        case .f32:
            guard count > 0, let base = source.baseAddress else { return }
            UnsafeMutableRawPointer(destination.baseAddress!).copyMemory(from: base, byteCount: count * 4)
        case .bf16:
            for index in 0..<count {
                let bits = source.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self)
                destination[index] = HalfPrecision.float(fromBFloat16: UInt16(littleEndian: bits))
            }
        case .f16:
            for index in 0..<count {
                let bits = source.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self)
                destination[index] = HalfPrecision.float(fromFloat16: UInt16(littleEndian: bits))
            }
        }
    }

    /// Narrows f32 `source` into little-endian bytes of this dtype (round-to-nearest-even).
    /// - Precondition: `destination.count == source.count · byteWidth`.
    public func encode(_ source: UnsafeBufferPointer<Float>, into destination: UnsafeMutableRawBufferPointer) {
        precondition(destination.count == source.count * self.byteWidth, "byte count does not match element count")
        let count = source.count
        switch self {
        case .f32:
            guard count > 0, let base = destination.baseAddress else { return }
            base.copyMemory(from: source.baseAddress!, byteCount: count * 4)
        case .bf16:
            for index in 0..<count {
                let bits = HalfPrecision.bfloat16(from: source[index]).littleEndian
                destination.storeBytes(of: bits, toByteOffset: index * 2, as: UInt16.self)
            }
        case .f16:
            for index in 0..<count {
                let bits = HalfPrecision.float16(from: source[index]).littleEndian
                destination.storeBytes(of: bits, toByteOffset: index * 2, as: UInt16.self)
            }
        }
    }

    /// Decodes little-endian bytes of this dtype into a new f32 array.
    public func decodeFloats(_ source: UnsafeRawBufferPointer) -> [Float] {
        let count = source.count / self.byteWidth
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            self.decode(UnsafeRawBufferPointer(rebasing: source[0..<count * self.byteWidth]), into: buffer)
            initialized = count
        }
    }

    /// Encodes f32 values as little-endian bytes of this dtype.
    public func encodeBytes(_ values: [Float]) -> [UInt8] {
        let byteCount = values.count * self.byteWidth
        return [UInt8](unsafeUninitializedCapacity: byteCount) { buffer, initialized in
            values.withUnsafeBufferPointer { self.encode($0, into: UnsafeMutableRawBufferPointer(buffer)) }
            initialized = byteCount
        }
    }
}
