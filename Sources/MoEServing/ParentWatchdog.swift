#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import ServiceLifecycle

/// Ends its run when the parent process `parentPID` is gone, so that a service started by `moemesh up` never
/// outlives it (even after `kill -9` of the parent). Run it with `successTerminationBehavior:
/// .gracefullyShutdownGroup`.
public struct ParentWatchdog: Service {
    public let parentPID: pid_t
    public let interval: Duration

    public init(parentPID: pid_t, interval: Duration = .milliseconds(500)) {
        self.parentPID = parentPID
        self.interval = interval
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            if getppid() != self.parentPID { return }
            // periodic: Linux tells a child of its parent's death by no event it can await
            try? await Task.sleep(for: self.interval)
        }
    }
}
