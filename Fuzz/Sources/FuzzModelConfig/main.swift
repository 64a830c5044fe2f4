import CFuzzerDriver
#if canImport(Glibc)
    import Glibc
#endif
import MoEModel

/// A `config.json` as a server reads it at start: parsed, resolved to its architecture adapter, every MoE layer's
/// spec built. Must answer or throw a `ModelError`.
func fuzzModelConfig(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: start, count: count))
    guard let config = try? ModelConfig(parsing: bytes, path: "fuzz/config.json"),
        let architecture = try? Architectures.resolve(config)
    else { return 0 }
    for layer in architecture.layers {
        precondition(layer.hiddenSize == architecture.hiddenSize)
        precondition(layer.numExperts > 0 && (1...layer.numExperts).contains(layer.topK))
        _ = layer.expertAddresses
    }
    return 0
}

exit(moemesh_run_fuzzer(CommandLine.argc, CommandLine.unsafeArgv) { data, size in fuzzModelConfig(data!, size) })
