#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Small POSIX file helpers, so that the model code needs no Foundation.
public enum FileSystem {
    public static func fileExists(_ path: String) -> Bool {
        var status = stat()
        return stat(path, &status) == 0
    }

    public static func isDirectory(_ path: String) -> Bool {
        var status = stat()
        return stat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFDIR
    }

    /// Reads a whole file with `read(2)` (so that files whose size is not known up front, like /proc's, work).
    public static func readFile(_ path: String) throws(ModelError) -> [UInt8] {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw .io(path: path, operation: "open", errno: errno) }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw .io(path: path, operation: "read", errno: errno)
            }
            if count == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<count])
        }
    }

    /// Writes `chunks` one after another to `path` (created or truncated), through a temporary file renamed
    /// into place so that a reader never sees a half-written file.
    public static func writeFile(_ path: String, chunks: [[UInt8]]) throws(ModelError) {
        let temporary = path + ".partial"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw .io(path: temporary, operation: "create", errno: errno) }
        for chunk in chunks {
            var written = 0
            while written < chunk.count {
                let result = chunk.withUnsafeBytes { write(descriptor, $0.baseAddress! + written, $0.count - written) }
                if result < 0 {
                    if errno == EINTR { continue }
                    let error = errno
                    close(descriptor)
                    throw .io(path: temporary, operation: "write", errno: error)
                }
                written += result
            }
        }
        guard close(descriptor) == 0 else { throw .io(path: temporary, operation: "close", errno: errno) }
        guard rename(temporary, path) == 0 else { throw .io(path: path, operation: "rename", errno: errno) }
    }

    /// `mkdir -p`.
    public static func createDirectory(_ path: String) throws(ModelError) {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix += component + "/"
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw .io(path: prefix, operation: "mkdir", errno: errno)
            }
        }
    }

    /// Names of the entries of a directory, sorted.
    public static func contentsOfDirectory(_ path: String) throws(ModelError) -> [String] {
        guard let directory = opendir(path) else { throw .io(path: path, operation: "opendir", errno: errno) }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// `directory/name`.
    public static func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }

    /// The message of an errno value.
    public static func describe(errno value: Int32) -> String {
        String(cString: strerror(value))
    }
}
