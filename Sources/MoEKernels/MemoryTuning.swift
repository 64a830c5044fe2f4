/// Process-wide allocator settings for large activation buffers.
public enum MemoryTuning {
    /// Keeps freed blocks of up to 1 GiB in the heap for reuse. glibc serves allocations above its dynamic mmap
    /// threshold (at most 32 MiB) with fresh `mmap`s, so every prefill batch's scratch (77 MB at T = 2048,
    /// H = 1024, I = 2816) would page-fault anew on each call.
    public static func keepLargeAllocations() {
        #if os(Linux)
        // glibc's <malloc.h> (not part of Swift's Glibc module): M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3.
        _ = glibcMallopt(-3, 1 << 30)
        _ = glibcMallopt(-1, 1 << 30)
        #endif
    }
}

#if os(Linux)
/// `int mallopt(int param, int value)` from glibc.
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
#endif
