import CFuzzerDriver
#if canImport(Glibc)
    import Glibc
#endif
import MoECore
import MoEProto
import MoEWire

/// A `Tensor` message as a router or expert receives it: protobuf-decoded, then validated and widened as token
/// rows for a few hidden sizes. What is accepted must round-trip: encoded back in its own dtype and decoded again,
/// it gives the same values (f32 exactly; bf16/f16 values are already representable, so also exactly).
func fuzzWireTensor(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard let tensor = try? Moemesh_V1_Tensor(serializedBytes: Array(UnsafeBufferPointer(start: start, count: count)))
    else { return 0 }
    for hiddenSize in [1, 4, 8, Int(clamping: tensor.shape.last ?? 0)] {
        guard
            let rows = try? tensor.decodeTokenRows(
                field: "fuzz", hiddenSize: hiddenSize, allowedRanks: [1, 2, 3], shapeDescription: "[..., H]")
        else { continue }
        precondition(rows.matrix.columns == hiddenSize && rows.matrix.values.count == rows.matrix.rows * hiddenSize)
        let again = Moemesh_V1_Tensor(rows.matrix, shape: rows.shape, dtype: rows.dtype)
        let decoded = try! again.decodeTokenRows(
            field: "fuzz", hiddenSize: hiddenSize, allowedRanks: [1, 2, 3], shapeDescription: "[..., H]")
        precondition(decoded.matrix.values == rows.matrix.values && decoded.shape == rows.shape)
    }
    return 0
}

exit(moemesh_run_fuzzer(CommandLine.argc, CommandLine.unsafeArgv) { data, size in fuzzWireTensor(data!, size) })
