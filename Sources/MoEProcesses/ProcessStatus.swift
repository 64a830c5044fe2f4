#if canImport(Glibc)
    import Glibc
#endif

/// What /proc/PID/stat says of a process: its state, parent, CPU time and resident memory. Used to watch the mesh's
/// processes.
public struct ProcessStatus: Sendable, Equatable {
    /// One letter: R running, S sleeping, Z zombie, ...
    public let state: Character
    public let parentPID: Int32
    /// User + system CPU time, in seconds.
    public let cpuSeconds: Double
    /// Resident set size, in bytes.
    public let residentBytes: Int

    /// The status of `pid`, nil if there is no such process.
    public static func read(pid: Int32) -> ProcessStatus? {
        let descriptor = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = Glibc.read(descriptor, &buffer, buffer.count)
        guard count > 0 else { return nil }
        let text = String(decoding: buffer[0..<count], as: UTF8.self)
        // "pid (command) state ppid ... utime stime ...": the command may hold spaces and parentheses.
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // Fields from the state on: state (3) ppid (4) … utime (14) stime (15) … rss in pages (24).
        guard fields.count > 21, let state = fields[0].first, let parent = Int32(fields[1]),
            let user = Double(fields[11]), let system = Double(fields[12]), let pages = Int(fields[21])
        else { return nil }
        return ProcessStatus(
            state: state, parentPID: parent, cpuSeconds: (user + system) / Double(sysconf(Int32(_SC_CLK_TCK))),
            residentBytes: pages * Int(sysconf(Int32(_SC_PAGESIZE))))
    }

    /// Whether `pid` exists and is not a zombie.
    public static func isAlive(_ pid: Int32) -> Bool {
        guard let status = read(pid: pid) else { return false }
        return status.state != "Z"
    }
}
