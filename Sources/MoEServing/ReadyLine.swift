#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import MoECore

extension ReadyLine {
    /// Prints the ready line of `role` and flushes standard output at once.
    public static func print(role: String, endpoint: ServiceEndpoint) {
        Swift.print(self.text(role: role, endpoint: endpoint))
        fflush(nil)  // flushes stdout without touching the global (not concurrency-safe in Swift 6)
    }
}
