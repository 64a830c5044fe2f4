#if os(Linux)
    import CMalloc
    import Glibc
#endif

/// Process-wide allocator settings (glibc), applied once at start by every `moemesh` command.
public enum MemoryTuning {
    /// Keeps freed blocks of up to 1 GiB in the heap for reuse, and allocates from one arena per core.
    ///
    /// - Large blocks: glibc serves allocations above its dynamic mmap threshold (at most 32 MiB) with fresh
    ///   `mmap`s, so every prefill batch's scratch (77 MB at T = 2048, H = 1024, I = 2816) would page-fault anew on
    ///   each call.
    /// - Arenas: glibc's default is up to 8 per core, and a server's threads (NIO event loops, the concurrency
    ///   pool's workers, which come and go) each settle on one: every arena grows to its own high-water mark, so
    ///   resident memory crept up for minutes under steady load (the soak's router +19% from minute 2 to 4 with the
    ///   default, +5% with one per core; BENCHMARKS.md).
    public static func configureAllocator() {
        #if os(Linux)
            _ = mallopt(M_MMAP_THRESHOLD, 1 << 30)
            _ = mallopt(M_TRIM_THRESHOLD, 1 << 30)
            _ = mallopt(M_ARENA_MAX, Int32(max(2, min(sysconf(Int32(_SC_NPROCESSORS_ONLN)), 64))))
        #endif
    }

    /// Gives the heap's free pages back to the system now (glibc `malloc_trim`): after loading experts, whose f32
    /// weights were read, converted to their storage precision and freed.
    public static func returnFreeMemory() {
        #if os(Linux)
            _ = malloc_trim(0)
        #endif
    }
}
