import MoECore
import MoEKernels
import Synchronization
import Testing

/// A kernel that adds its key to every value, holding `bytes`.
private struct MarkerKernel: ExpertKernel {
    let key: Int
    var hiddenSize: Int { 1 }
    var intermediateSize: Int { 1 }
    func forward(_ rows: Matrix) -> Matrix { Matrix(rows: rows.rows, columns: 1, values: rows.values.map { $0 + Float(self.key) }) }
}

@Suite("expert cache under a memory budget")
struct ExpertCacheTests {
    private final class Loads: Sendable {
        let keys = Mutex<[Int]>([])
    }

    @Test("loads on first use, evicts the least recently used to stay within the budget, counts hits, misses, evictions")
    func leastRecentlyUsed() throws {
        let loads = Loads()
        // 100 bytes per expert, room for 3.
        let cache = ExpertCache<Int>(budgetBytes: 300) { key in
            loads.keys.withLock { $0.append(key) }
            return (MarkerKernel(key: key), 100)
        }
        for key in [1, 2, 3] { _ = try cache.kernel(for: key) }
        _ = try cache.kernel(for: 1)  // 1 is now the most recent; 2 the least.
        _ = try cache.kernel(for: 4)  // evicts 2
        #expect(!cache.isResident(2) && cache.isResident(1) && cache.isResident(3) && cache.isResident(4))
        _ = try cache.kernel(for: 2)  // evicts 3
        #expect(!cache.isResident(3))
        let output = try cache.kernel(for: 4).forward(Matrix(rows: 1, columns: 1, values: [0.5]))
        #expect(output.values == [4.5])
        #expect(loads.keys.withLock { $0 } == [1, 2, 3, 4, 2])
        let stats = cache.statistics
        #expect(stats.hits == 2 && stats.misses == 5 && stats.evictions == 2)
        #expect(stats.residentBytes == 300 && stats.residentExperts == 3 && stats.budgetBytes == 300)
    }

    @Test("without a budget nothing is evicted")
    func unlimited() throws {
        let cache = ExpertCache<Int>(budgetBytes: nil) { key in (MarkerKernel(key: key), 1 << 30) }
        for key in 0..<10 { _ = try cache.kernel(for: key) }
        #expect(cache.statistics.evictions == 0 && cache.statistics.residentExperts == 10)
    }

    @Test("a load that fails is reported and leaves the cache as it was")
    func failedLoad() throws {
        struct Unreadable: Error {}
        let cache = ExpertCache<Int>(budgetBytes: 200) { key in
            if key == 9 { throw Unreadable() }
            return (MarkerKernel(key: key), 100)
        }
        _ = try cache.kernel(for: 1)
        #expect(throws: Unreadable.self) { try cache.kernel(for: 9) }
        #expect(cache.isResident(1) && cache.statistics.residentExperts == 1 && cache.statistics.misses == 1)
    }
}
