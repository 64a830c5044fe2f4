import MoECore
import Synchronization

/// Experts resident in memory under a byte budget: loaded on first use, the least recently used evicted when a
/// load would exceed the budget. Weights stay in the memory-mapped checkpoint; a resident expert is its kernel,
/// widened for compute. With no budget every expert is loaded at start and stays.
///
/// Not thread-safe for `kernel(for:)`: the expert service calls it from its one compute thread (one job at a
/// time), so loads, evictions and use never overlap. `statistics` may be read from anywhere.
public final class ExpertCache<Key: Hashable & Sendable>: @unchecked Sendable {
    public struct Statistics: Sendable, Equatable {
        public var hits = 0
        public var misses = 0
        public var evictions = 0
        /// Total time spent loading (widening) experts.
        public var loadTime: Duration = .zero
        public var residentBytes = 0
        public var residentExperts = 0
        public var budgetBytes: Int?
    }

    private struct Entry {
        let kernel: any ExpertKernel
        let bytes: Int
        var lastUse: UInt64
    }

    public let budgetBytes: Int?
    private let load: @Sendable (Key) throws -> (kernel: any ExpertKernel, bytes: Int)
    private var entries: [Key: Entry] = [:]
    private var clock: UInt64 = 0
    private let stats: Mutex<Statistics>

    /// - Parameters:
    ///   - budgetBytes: most bytes of resident experts; nil: no limit.
    ///   - load: builds an expert's kernel and says how many bytes it holds.
    public init(budgetBytes: Int?, load: @escaping @Sendable (Key) throws -> (kernel: any ExpertKernel, bytes: Int)) {
        self.budgetBytes = budgetBytes
        self.load = load
        self.stats = Mutex(Statistics(budgetBytes: budgetBytes))
    }

    /// Every expert resident for good (no budget, no loader): `experts` are the kernels and their bytes. Keeps no
    /// reference to the checkpoint they came from, so its mapping can go.
    public convenience init(resident experts: [(key: Key, kernel: any ExpertKernel, bytes: Int)]) {
        self.init(budgetBytes: nil) { key in throw NotResident(key: "\(key)") }
        for (key, kernel, bytes) in experts {
            self.entries[key] = Entry(kernel: kernel, bytes: bytes, lastUse: 0)
        }
        let (bytes, count) = (experts.reduce(0) { $0 + $1.bytes }, experts.count)
        self.stats.withLock { stats in
            stats.misses = count
            stats.residentBytes = bytes
            stats.residentExperts = count
        }
    }

    /// A key a cache built with `init(resident:)` does not hold.
    public struct NotResident: Error, CustomStringConvertible {
        public let key: String
        public var description: String { "\(self.key) is not resident and this cache loads nothing" }
    }

    public var statistics: Statistics { self.stats.withLock { $0 } }

    /// Whether `key` is resident now.
    public func isResident(_ key: Key) -> Bool { self.entries[key] != nil }

    /// The kernel of `key`, loading it (and evicting others, least recently used first) if it is not resident.
    public func kernel(for key: Key) throws -> any ExpertKernel {
        self.clock += 1
        if let entry = self.entries[key] {
            self.entries[key]?.lastUse = self.clock
            self.stats.withLock { $0.hits += 1 }
            return entry.kernel
        }
        let started = ContinuousClock.now
        let (kernel, bytes) = try self.load(key)
        let loadTime = ContinuousClock.now - started
        var evicted = 0
        if let budget = self.budgetBytes {
            var total = self.entries.values.reduce(bytes) { $0 + $1.bytes }
            while total > budget, let victim = self.entries.min(by: { $0.value.lastUse < $1.value.lastUse }) {
                self.entries[victim.key] = nil
                total -= victim.value.bytes
                evicted += 1
            }
        }
        self.entries[key] = Entry(kernel: kernel, bytes: bytes, lastUse: self.clock)
        let (residentBytes, residentCount) = (self.entries.values.reduce(0) { $0 + $1.bytes }, self.entries.count)
        self.stats.withLock { stats in
            stats.misses += 1
            stats.evictions += evicted
            stats.loadTime += loadTime
            stats.residentBytes = residentBytes
            stats.residentExperts = residentCount
        }
        return kernel
    }
}
