import Testing

@testable import MoEKernels

@Suite("OpenBLAS kernel set")
struct BLASKernelSetTests {
    static let avx512: Set<String> = ["sse3", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"]
    static let avx2: Set<String> = ["sse3", "avx", "avx2", "fma"]

    @Test(
        "kernels follow the CPU's features when OpenBLAS under-detects it, never against a person's choice",
        arguments: [
            ("Prescott", avx512, nil, "SkylakeX"),  // Xeon with AVX-512 BF16/FP16 under OpenBLAS 0.3.21
            ("Haswell", avx512, nil, "SkylakeX"),  // AMD Zen 4/5 under OpenBLAS 0.3.21
            ("Zen", avx512, nil, "SkylakeX"),
            ("SkylakeX", avx512, nil, nil),  // already right
            ("Cooperlake", avx512, nil, nil),  // as good (same sgemm kernels)
            ("Prescott", avx2, nil, "Haswell"),  // an unknown AVX2 CPU
            ("Sandybridge", avx2, nil, "Haswell"),
            ("Haswell", avx2, nil, nil),
            ("Haswell", ["avx2", "fma", "avx512f"], nil, nil),  // partial AVX-512 (no BW/DQ/VL)
            ("Prescott", ["sse3"], nil, nil),  // nothing better to ask for
            ("Prescott", [], nil, nil),  // no flags known (no `flags` line)
            ("Haswell", avx512, "Haswell", nil),  // OPENBLAS_CORETYPE set by a person
        ] as [(String, Set<String>, String?, String?)])
    func recommendation(detected: String, flags: Set<String>, requested: String?, expected: String?) {
        #expect(
            BLASKernelSet.recommendedCoreType(detected: detected, cpuFlags: flags, requested: requested) == expected)
    }

    @Test("CPU flags come from the first `flags` line; a /proc/cpuinfo without one gives none")
    func parsesFlags() {
        let x86 =
            "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse3 avx2 fma\nbugs\t\t: spectre\nflags\t\t: other\n"
        #expect(BLASKernelSet.cpuFlags(cpuinfo: x86) == ["fpu", "sse3", "avx2", "fma"])
        let arm = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes\nCPU implementer\t: 0x41\n"
        #expect(BLASKernelSet.cpuFlags(cpuinfo: arm).isEmpty)
        #expect(BLASKernelSet.cpuFlags(cpuinfo: "").isEmpty)
    }

    @Test("this process runs the kernel set the rule chooses for this CPU, and says why")
    func thisProcess() {
        let current = BLASKernelSet.current
        #expect(!current.active.isEmpty && current.active != "unknown")
        if current.reason.hasPrefix("chosen from the CPU's features") {
            #expect(current.active != current.detected)
            #expect(
                current.active.lowercased()
                    == BLASKernelSet.recommendedCoreType(
                        detected: current.detected, cpuFlags: BLASKernelSet.cpuFlags(), requested: nil)?.lowercased())
        } else {
            #expect(current.active == current.detected)
        }
        #expect("\(current)".hasPrefix(current.active))
    }
}
