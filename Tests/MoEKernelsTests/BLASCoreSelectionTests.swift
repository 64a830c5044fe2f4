import Testing

@testable import MoEKernels

@Suite("OpenBLAS kernel set")
struct BLASCoreSelectionTests {
    static let avx512: Set<String> = ["avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"]

    @Test(
        "SkylakeX kernels are asked for only on AVX-512 CPUs that OpenBLAS under-detects, never against a person's choice",
        arguments: [
            ("Haswell", avx512, nil, "SkylakeX"),      // Zen 4/5 under OpenBLAS 0.3.21
            ("Zen", avx512, nil, "SkylakeX"),
            ("SkylakeX", avx512, nil, nil),            // already right
            ("Haswell", ["avx2", "fma"], nil, nil),    // no AVX-512
            ("Haswell", ["avx2", "avx512f"], nil, nil),  // partial AVX-512 (no BW/DQ/VL)
            ("Haswell", avx512, "Haswell", nil),       // OPENBLAS_CORETYPE set by a person
        ] as [(String, Set<String>, String?, String?)])
    func recommendation(detected: String, flags: Set<String>, requested: String?, expected: String?) {
        #expect(BLASCoreSelection.recommendedCoreType(detected: detected, cpuFlags: flags, requested: requested) == expected)
    }

    @Test("this machine's CPU flags are read")
    func readsFlags() {
        #expect(!BLASCoreSelection.cpuFlags().isEmpty)
    }
}
