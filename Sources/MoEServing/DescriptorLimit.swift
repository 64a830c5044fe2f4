#if canImport(Glibc)
    import Glibc
#endif

/// The process's limit on open file descriptors (RLIMIT_NOFILE).
public enum DescriptorLimit {
    /// Raises the soft limit to the hard one, as Go's runtime does for every program: the soft limit (often 1,024)
    /// is a compatibility default for `select`, which nothing here uses, and gRPC's C++ core (1.51) stops accepting
    /// on a port for good once `accept` fails with EMFILE (grpc/grpc#20418), so a server should meet that limit as
    /// late as the system allows. The HTTP endpoints refuse connections beyond their own cap long before.
    /// - Returns: the soft limit now in force.
    @discardableResult
    public static func raiseToHardLimit() -> Int {
        #if canImport(Glibc)
            var limit = rlimit()
            guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return -1 }
            if limit.rlim_cur < limit.rlim_max {
                var raised = limit
                raised.rlim_cur = limit.rlim_max
                if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
            }
            return limit.rlim_cur >= rlim_t(Int.max) ? Int.max : Int(limit.rlim_cur)
        #else
            return -1
        #endif
    }
}
