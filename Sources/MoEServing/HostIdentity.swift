#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Which host a process runs on, as far as a Unix domain socket's path is concerned: two processes with the same
/// identity reach each other's sockets by path. On Linux: the boot id and the network and mount namespaces (network
/// namespaces stand for hosts in the multi-host tests; containers have their own mount namespace), e.g.
/// `9f0c…:net:[4026531840]:mnt:[4026531841]`. Elsewhere: the host name.
public enum HostIdentity {
    public static let current: String = {
        let parts = [
            Self.read("/proc/sys/kernel/random/boot_id"), Self.link("/proc/self/ns/net"),
            Self.link("/proc/self/ns/mnt"),
        ]
        if parts.allSatisfy({ $0 != nil }) { return parts.compactMap(\.self).joined(separator: ":") }
        return ProcessInfo.processInfo.hostName
    }()

    private static func read(_ path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let text = String(decoding: data, as: UTF8.self).filter { !$0.isWhitespace }
        return text.isEmpty ? nil : text
    }

    private static func link(_ path: String) -> String? {
        try? FileManager.default.destinationOfSymbolicLink(atPath: path)
    }
}
