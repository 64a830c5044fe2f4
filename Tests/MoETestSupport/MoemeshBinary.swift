#if canImport(Glibc)
    import Glibc
#endif
import MoEModel
import MoEProcesses
import MoEServing

/// The built `moemesh` executable, for tests that run real processes: `$MOEMESH_BINARY`, else the one beside
/// the test bundle (`swift build` puts both in the same folder).
public enum MoemeshBinary {
    public static var path: String {
        if let value = getenv("MOEMESH_BINARY") { return String(cString: value) }
        let testBinary = ChildProcess.currentExecutable
        var folder = testBinary
        while let slash = folder.lastIndex(of: "/") {
            folder = String(folder[..<slash])
            let candidate = folder + "/moemesh"
            if FileSystem.fileExists(candidate) && !FileSystem.isDirectory(candidate) { return candidate }
            if folder.hasSuffix("/.build") || folder.isEmpty { break }
        }
        return "moemesh (not found beside \(testBinary): run `swift build` first or set MOEMESH_BINARY)"
    }

    /// PIDs of the live processes whose parent is `parent` (from /proc).
    public static func children(of parent: Int32) -> [Int32] {
        guard let names = try? FileSystem.contentsOfDirectory("/proc") else { return [] }
        return names.compactMap(Int32.init).filter { pid in
            guard let status = ProcessStatus.read(pid: pid) else { return false }
            return status.parentPID == parent && status.state != "Z"
        }
    }

    /// Whether a process with this PID exists (and is not a zombie).
    public static func isAlive(_ pid: Int32) -> Bool { ProcessStatus.isAlive(pid) }
}

extension MoemeshBinary {
    /// A process's own resident memory in bytes (`RssAnon` from /proc/PID/status: its heap and stacks, where weights
    /// live; not the pages of files it maps, such as the binary or a checkpoint still mapped), nil if unreadable.
    public static func anonymousResidentBytes(of pid: Int32) -> Int? {
        guard let status = try? FileSystem.readFile("/proc/\(pid)/status") else { return nil }
        for line in String(decoding: status, as: UTF8.self).split(separator: "\n") where line.hasPrefix("RssAnon:") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.count >= 2, let kib = Int(fields[1]) { return kib * 1024 }
        }
        return nil
    }
}

extension MoemeshBinary {
    /// A process's arguments joined by spaces (from /proc/PID/cmdline), empty if unreadable.
    public static func commandLine(of pid: Int32) -> String {
        guard let bytes = try? FileSystem.readFile("/proc/\(pid)/cmdline") else { return "" }
        return String(decoding: bytes.map { $0 == 0 ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
    }
}
