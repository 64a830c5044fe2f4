#if canImport(Glibc)
import Glibc
#endif

/// Chooses OpenBLAS's kernel set from the CPU's features. OpenBLAS 0.3.21 takes some AVX-512 CPUs (AMD Zen 4/5)
/// for Haswell and uses AVX2 kernels, at about half the sgemm rate; its SkylakeX kernels run on any CPU with
/// AVX-512 F/BW/DQ/VL. The choice must be made before OpenBLAS loads (`OPENBLAS_CORETYPE`), so `moemesh` re-executes
/// itself once with it set.
public enum BLASCoreSelection {
    /// The kernel set to ask for, or nil to keep OpenBLAS's own choice.
    /// - Parameters:
    ///   - detected: what OpenBLAS picked (`openblas_get_corename`).
    ///   - cpuFlags: the `flags` of /proc/cpuinfo.
    ///   - requested: `OPENBLAS_CORETYPE` if set (a person's choice always wins).
    public static func recommendedCoreType(detected: String, cpuFlags: Set<String>, requested: String?) -> String? {
        guard requested == nil else { return nil }
        let avx512 = ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(cpuFlags.contains)
        let weaker = ["haswell", "zen", "sandybridge", "prescott", "nehalem", "core2"].contains(detected.lowercased())
        return avx512 && weaker ? "SkylakeX" : nil
    }

    /// The `flags` line of /proc/cpuinfo.
    public static func cpuFlags() -> Set<String> {
        guard let descriptor = Optional(open("/proc/cpuinfo", O_RDONLY)), descriptor >= 0 else { return [] }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = read(descriptor, &chunk, chunk.count)
            if count <= 0 { break }
            bytes += chunk[0..<count]
            if bytes.count > 1 << 20 { break }
        }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("flags") {
            return Set(line.split(separator: ":").last?.split(separator: " ").map(String.init) ?? [])
        }
        return []
    }

    /// Re-executes this process with `OPENBLAS_CORETYPE` set when that selects better kernels; returns otherwise.
    public static func reexecIfBeneficial() {
        let requested = getenv("OPENBLAS_CORETYPE").map { String(cString: $0) }
        guard getenv("MOEMESH_BLAS_REEXEC") == nil,
            let coreType = self.recommendedCoreType(detected: BLAS.coreName, cpuFlags: self.cpuFlags(), requested: requested)
        else { return }
        setenv("OPENBLAS_CORETYPE", coreType, 1)
        setenv("MOEMESH_BLAS_REEXEC", "1", 1)
        let arguments = CommandLine.arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", arguments)
        // execv returns only on failure: carry on with the detected kernels.
    }
}
