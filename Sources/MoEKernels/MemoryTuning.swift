#if os(Linux)
    import CMalloc
#endif

/// Process-wide allocator settings for large activation buffers.
public enum MemoryTuning {
    /// Keeps freed blocks of up to 1 GiB in the heap for reuse. glibc serves allocations above its dynamic mmap
    /// threshold (at most 32 MiB) with fresh `mmap`s, so every prefill batch's scratch (77 MB at T = 2048,
    /// H = 1024, I = 2816) would page-fault anew on each call.
    public static func keepLargeAllocations() {
        #if os(Linux)
            _ = mallopt(M_MMAP_THRESHOLD, 1 << 30)
            _ = mallopt(M_TRIM_THRESHOLD, 1 << 30)
        #endif
    }
}
