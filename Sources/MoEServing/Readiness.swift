import Synchronization

/// Whether a service is ready, and if not, why (for the errors it answers meanwhile).
public final class Readiness: Sendable {
    private let reason: Mutex<String?>

    public init(notReady reason: String) { self.reason = Mutex(reason) }

    private init() { self.reason = Mutex(nil) }

    /// Ready from the start.
    public static var ready: Readiness { Readiness() }

    /// nil once ready.
    public var notReadyReason: String? { self.reason.withLock { $0 } }

    public func setReady() { self.reason.withLock { $0 = nil } }
}
