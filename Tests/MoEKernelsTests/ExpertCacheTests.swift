import MoECore
import MoEKernels
import Synchronization
import Testing

/// A kernel that adds its key to every value, holding `bytes`.
private struct MarkerKernel: ExpertKernel {
    let key: Int
    var hiddenSize: Int { 1 }
    var intermediateSize: Int { 1 }
    func forward(_ rows: Matrix) -> Matrix {
        Matrix(rows: rows.rows, columns: 1, values: rows.values.map { $0 + Float(self.key) })
    }
}

@Suite("expert cache under a memory budget")
struct ExpertCacheTests {
    private final class Loads: Sendable {
        let keys = Mutex<[Int]>([])
    }

    @Test(
        "loads on first use, evicts the least recently used to stay within the budget, counts hits, misses, evictions")
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

@Suite("expert cache: prefetch and concurrent use")
struct ExpertCachePrefetchTests {
    private struct Kernel: ExpertKernel {
        let key: Int
        var hiddenSize: Int { 1 }
        var intermediateSize: Int { 1 }
        func forward(_ rows: Matrix) -> Matrix {
            Matrix(rows: rows.rows, columns: 1, values: rows.values.map { $0 + Float(self.key) })
        }
    }

    private final class ResidentAtLoad: Sendable {
        let values = Mutex<[Int]>([])
    }

    @Test("a prefetch loads ahead (counted apart from misses); the use after it is a hit; resident stays loaded once")
    func prefetch() throws {
        let cache = ExpertCache<Int>(budgetBytes: 200) { key in (Kernel(key: key), 100) }
        #expect(try cache.prefetch(1))
        #expect(try !cache.prefetch(1))
        _ = try cache.kernel(for: 1)
        let stats = cache.statistics
        #expect(stats.prefetches == 1 && stats.misses == 0 && stats.hits == 1)
    }

    @Test("room is made before a load: the device never holds more than the budget while one loads")
    func evictsBeforeLoading() throws {
        let seen = ResidentAtLoad()
        let box = Mutex<ExpertCache<Int>?>(nil)
        let cache = ExpertCache<Int>(budgetBytes: 300) { key in
            seen.values.withLock { $0.append(box.withLock { $0?.statistics.residentBytes ?? 0 }) }
            return (Kernel(key: key), 100)
        }
        box.withLock { $0 = cache }
        for key in 0..<6 { _ = try cache.kernel(for: key) }
        // Loads 4, 5, 6 found 200 bytes resident (one evicted first), never 300.
        #expect(seen.values.withLock { $0 } == [0, 100, 200, 200, 200, 200])
        #expect(cache.statistics.evictions == 3 && cache.statistics.residentBytes == 300)
    }

    @Test("many threads using and loading at once: every answer is its expert's, one load per expert")
    func concurrentUse() async throws {
        let loads = ResidentAtLoad()
        let cache = ExpertCache<Int>(budgetBytes: nil) { key in
            loads.values.withLock { $0.append(key) }
            return (Kernel(key: key), 10)
        }
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for call in 0..<200 {
                group.addTask {
                    let key = call % 10
                    return try cache.kernel(for: key).forward(Matrix(rows: 1, columns: 1, values: [0])).values == [
                        Float(key)
                    ]
                }
            }
            for try await correct in group { #expect(correct) }
        }
        #expect(loads.values.withLock { $0.sorted() } == Array(0..<10))
        #expect(cache.statistics.hits == 190 && cache.statistics.misses == 10)
    }
}
