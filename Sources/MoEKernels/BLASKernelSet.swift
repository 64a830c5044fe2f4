import COpenBLAS

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The OpenBLAS kernel set of this process, chosen the same way in every process of the project (the `moemesh`
/// binary, the test processes, the benchmark's in-process baseline) before its first BLAS call.
///
/// Debian's OpenBLAS 0.3.21 picks its kernels from the CPU model when it loads and under-detects recent CPUs: AMD Zen
/// 4/5 as Haswell (AVX2), an Intel Xeon with AVX-512 BF16/FP16 as Prescott (SSE3), at a half or a quarter of the
/// sgemm rate. Here the choice follows the CPU's features instead: SkylakeX kernels where AVX-512 F/BW/DQ/VL are
/// present, Haswell kernels where AVX2 and FMA are, OpenBLAS's own choice otherwise or when it is already as good;
/// `OPENBLAS_CORETYPE` set by a person always wins. The choice is applied in process (OpenBLAS's exported
/// `gotoblas_dynamic_quit`/`gotoblas_dynamic_init` re-run its selection), so nothing needs re-executing.
public struct BLASKernelSet: Sendable, Equatable, CustomStringConvertible {
    /// What OpenBLAS chose when it loaded.
    public let detected: String
    /// The kernel set in use.
    public let active: String
    /// Why this one.
    public let reason: String

    /// This process's kernel set; the first use makes the choice (every `BLAS` entry point uses it first).
    public static let current: BLASKernelSet = Self.select()

    public var description: String {
        self.active == self.detected
            ? "\(self.active) (\(self.reason))" : "\(self.active) (\(self.reason); OpenBLAS detected \(self.detected))"
    }

    /// Kernel sets from the weakest, by the instructions their sgemm uses; names as `openblas_get_corename` spells
    /// them (lowercased). Unlisted names rank lowest.
    static let ranks: [String: Int] = [
        "sandybridge": 1, "bulldozer": 1, "piledriver": 1, "steamroller": 1, "excavator": 1,
        "haswell": 2, "zen": 2,
        "skylakex": 3, "cooperlake": 3, "sapphirerapids": 3,
    ]

    /// The kernel set to ask for, or nil to keep OpenBLAS's choice.
    /// - Parameters:
    ///   - detected: what OpenBLAS picked (`openblas_get_corename`).
    ///   - cpuFlags: the CPU's feature flags (`flags` of /proc/cpuinfo; empty where there is no such line).
    ///   - requested: `OPENBLAS_CORETYPE`, if set.
    public static func recommendedCoreType(detected: String, cpuFlags: Set<String>, requested: String?) -> String? {
        guard requested == nil else { return nil }
        let rank = Self.ranks[detected.lowercased()] ?? 0
        if ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(cpuFlags.contains) {
            return rank < 3 ? "SkylakeX" : nil
        }
        if cpuFlags.contains("avx2") && cpuFlags.contains("fma") {
            return rank < 2 ? "Haswell" : nil
        }
        return nil
    }

    /// The flags of the first `flags` line of a /proc/cpuinfo text (x86); empty when it has none (arm64, some VMs).
    public static func cpuFlags(cpuinfo: String) -> Set<String> {
        for line in cpuinfo.split(separator: "\n") where line.hasPrefix("flags") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
        }
        return []
    }

    /// This machine's CPU flags.
    public static func cpuFlags() -> Set<String> {
        Self.cpuFlags(cpuinfo: Self.readCPUInfo())
    }

    private static func select() -> BLASKernelSet {
        let detected = Self.openBLASCoreName()
        if let requested = getenv("OPENBLAS_CORETYPE").map({ String(cString: $0) }) {
            return BLASKernelSet(detected: detected, active: detected, reason: "OPENBLAS_CORETYPE=\(requested) is set")
        }
        let flags = Self.cpuFlags()
        guard let choice = Self.recommendedCoreType(detected: detected, cpuFlags: flags, requested: nil) else {
            return BLASKernelSet(detected: detected, active: detected, reason: "OpenBLAS's own choice for this CPU")
        }
        // OpenBLAS reads OPENBLAS_CORETYPE inside gotoblas_dynamic_init; the variable is removed again so that child
        // processes make the same choice the same way (and say so).
        setenv("OPENBLAS_CORETYPE", choice, 1)
        gotoblas_dynamic_quit()
        gotoblas_dynamic_init()
        unsetenv("OPENBLAS_CORETYPE")
        let features = choice == "SkylakeX" ? "AVX-512 F/BW/DQ/VL" : "AVX2 and FMA"
        return BLASKernelSet(
            detected: detected, active: Self.openBLASCoreName(), reason: "chosen from the CPU's features: \(features)")
    }

    private static func openBLASCoreName() -> String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    private static func readCPUInfo() -> String {
        let descriptor = open("/proc/cpuinfo", O_RDONLY)
        guard descriptor >= 0 else { return "" }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while bytes.count < 1 << 20 {
            let count = read(descriptor, &chunk, chunk.count)
            if count <= 0 { break }
            bytes += chunk[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
