import MoECore
import Synchronization

/// Experts resident on their device under a byte budget: loaded on first use (or on a prefetch hint), the least
/// recently used evicted to make room. Weights stay in the memory-mapped checkpoint; a resident expert is its kernel
/// (f32 weights on the CPU, bf16 weights on a GPU). With no budget every expert is loaded at start and stays.
///
/// Thread-safe: lookups take a short lock; loads run one at a time outside it, so hits go on while an expert loads.
/// An evicted kernel still in use by a forward pass lives until that pass ends.
public final class ExpertCache<Key: Hashable & Sendable>: Sendable {
    public struct Statistics: Sendable, Equatable {
        public var hits = 0
        public var misses = 0
        public var evictions = 0
        /// Loads started by a prefetch hint (not counted as misses).
        public var prefetches = 0
        /// Total time spent loading experts (reading, converting, copying to the device).
        public var loadTime: Duration = .zero
        public var residentBytes = 0
        public var residentExperts = 0
        public var budgetBytes: Int?

        public init(budgetBytes: Int? = nil) { self.budgetBytes = budgetBytes }
    }

    private struct Entry {
        let kernel: any ExpertKernel
        let bytes: Int
        var lastUse: UInt64
    }

    private struct State {
        var entries: [Key: Entry] = [:]
        var clock: UInt64 = 0
        var statistics: Statistics

        /// The kernel of `key`, marked used, or nil.
        mutating func hit(_ key: Key) -> (any ExpertKernel)? {
            guard let entry = self.entries[key] else { return nil }
            self.clock += 1
            self.entries[key]?.lastUse = self.clock
            self.statistics.hits += 1
            return entry.kernel
        }

        /// Evicts least recently used entries until `incoming` more bytes fit in `budget`; returns how many went.
        mutating func makeRoom(for incoming: Int, budget: Int?) {
            guard let budget else { return }
            var total = self.entries.values.reduce(incoming) { $0 + $1.bytes }
            while total > budget, let victim = self.entries.min(by: { $0.value.lastUse < $1.value.lastUse }) {
                self.entries[victim.key] = nil
                total -= victim.value.bytes
                self.statistics.evictions += 1
            }
            self.statistics.residentBytes = total - incoming
            self.statistics.residentExperts = self.entries.count
        }
    }

    public let budgetBytes: Int?
    private let load: @Sendable (Key) throws -> (kernel: any ExpertKernel, bytes: Int)
    private let state: Mutex<State>
    /// Held while loading: one load at a time, so that two never both make room for themselves.
    private let loading = Mutex<Void>(())
    /// Announced when an expert is loaded (and others perhaps evicted).
    public let changes = StateChanges()

    /// - Parameters:
    ///   - budgetBytes: most bytes of resident experts; nil: no limit.
    ///   - load: builds an expert's kernel and says how many bytes it holds.
    public init(budgetBytes: Int?, load: @escaping @Sendable (Key) throws -> (kernel: any ExpertKernel, bytes: Int)) {
        self.budgetBytes = budgetBytes
        self.load = load
        self.state = Mutex(State(statistics: Statistics(budgetBytes: budgetBytes)))
    }

    /// Every expert resident for good (no budget, no loader): `experts` are the kernels and their bytes. Keeps no
    /// reference to the checkpoint they came from, so its mapping can go.
    public convenience init(resident experts: [(key: Key, kernel: any ExpertKernel, bytes: Int)]) {
        self.init(budgetBytes: nil) { key in throw NotResident(key: "\(key)") }
        self.state.withLock { state in
            for (key, kernel, bytes) in experts {
                state.entries[key] = Entry(kernel: kernel, bytes: bytes, lastUse: 0)
            }
            state.statistics.misses = experts.count
            state.statistics.residentBytes = experts.reduce(0) { $0 + $1.bytes }
            state.statistics.residentExperts = experts.count
        }
    }

    /// A key a cache built with `init(resident:)` does not hold.
    public struct NotResident: Error, CustomStringConvertible {
        public let key: String
        public var description: String { "\(self.key) is not resident and this cache loads nothing" }
    }

    public var statistics: Statistics { self.state.withLock { $0.statistics } }

    /// Whether `key` is resident now.
    public func isResident(_ key: Key) -> Bool { self.state.withLock { $0.entries[key] != nil } }

    /// The kernel of `key`, loading it (and evicting others, least recently used first) if it is not resident.
    public func kernel(for key: Key) throws -> any ExpertKernel {
        if let kernel = self.state.withLock({ $0.hit(key) }) { return kernel }
        return try self.loadIfMissing(key, prefetch: false).kernel
    }

    /// Loads `key` ahead of its use, unless it is resident (a prefetch hint); returns whether it loaded it.
    @discardableResult
    public func prefetch(_ key: Key) throws -> Bool {
        if self.isResident(key) { return false }
        return try self.loadIfMissing(key, prefetch: true).loaded
    }

    /// The kernel of `key`, and whether this call loaded it (false: another caller did while this one waited).
    private func loadIfMissing(_ key: Key, prefetch: Bool) throws -> (kernel: any ExpertKernel, loaded: Bool) {
        try self.loading.withLock { _ in
            if let kernel = self.state.withLock({ prefetch ? $0.entries[key]?.kernel : $0.hit(key) }) {
                return (kernel, false)
            }
            // Experts of one model have one size: make room for one like the largest resident before loading, so
            // that loading never takes the device over the budget (a GPU could not hold more).
            self.state.withLock { state in
                state.makeRoom(for: state.entries.values.map(\.bytes).max() ?? 0, budget: self.budgetBytes)
            }
            let started = ContinuousClock.now
            let (kernel, bytes) = try self.load(key)
            let loadTime = ContinuousClock.now - started
            self.state.withLock { state in
                state.makeRoom(for: bytes, budget: self.budgetBytes)
                state.clock += 1
                state.entries[key] = Entry(kernel: kernel, bytes: bytes, lastUse: state.clock)
                if prefetch { state.statistics.prefetches += 1 } else { state.statistics.misses += 1 }
                state.statistics.loadTime += loadTime
                state.statistics.residentBytes += bytes
                state.statistics.residentExperts = state.entries.count
            }
            self.changes.changed()
            return (kernel, true)
        }
    }
}
