import CFuzzerDriver
#if canImport(Glibc)
    import Glibc
#endif
import MoEModel

/// One input, read both ways a model folder reads untrusted bytes: as a whole safetensors file (the header and
/// its validation against the data buffer) and as `model.safetensors.index.json`. Either must answer or throw a
/// `ModelError`; a crash, a sanitizer report or a hang is a finding.
func fuzzSafeTensors(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    if let header = try? SafeTensorsHeader(parsing: bytes, path: "fuzz.safetensors") {
        // Every accepted entry lies inside the buffer and has the bytes its shape needs.
        for entry in header.entries.values {
            precondition(header.dataStart + entry.dataRange.upperBound <= count)
            precondition(entry.dataRange.count == entry.shape.reduce(1, *) * entry.dtype.byteWidth)
        }
    }
    if let index = try? SafeTensorsIndex(parsing: Array(bytes), path: "fuzz.index.json") {
        precondition(index.weightMap.values.allSatisfy { !$0.contains("/") && $0 != ".." })
    }
    return 0
}

exit(moemesh_run_fuzzer(CommandLine.argc, CommandLine.unsafeArgv) { data, size in fuzzSafeTensors(data!, size) })
