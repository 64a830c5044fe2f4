#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A whole file memory-mapped read-only. Pages are read from disk when first touched, so a process that
/// reads only some tensors of a checkpoint keeps only those in memory.
public final class MappedFile: @unchecked Sendable {
    // Immutable after init, and the mapping is read-only: safe to share across threads.
    public let path: String
    public let bytes: UnsafeRawBufferPointer

    public init(path: String) throws(ModelError) {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw .io(path: path, operation: "open", errno: errno) }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw .io(path: path, operation: "stat", errno: errno) }
        let size = Int(status.st_size)
        self.path = path
        if size == 0 {
            self.bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, descriptor, 0), address != MAP_FAILED else {
            throw .io(path: path, operation: "mmap", errno: errno)
        }
        self.bytes = UnsafeRawBufferPointer(start: address, count: size)
    }

    deinit {
        if let base = self.bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), self.bytes.count) }
    }
}
