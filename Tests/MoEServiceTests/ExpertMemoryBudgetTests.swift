import Dispatch
import GRPCCore
import MoECore
import MoEExpert
import MoEKernels
import MoEModel
import MoEProto
import MoERouter
import MoEWire
import Prometheus
import CoreMetrics
import MoEServing
import MoETestSupport
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("expert service under a memory budget")
struct ExpertMemoryBudgetTests {
    static let shape = ModelSynthesizer.Shape(experts: 6, topK: 2, hiddenSize: 32, intermediateSize: 48, layers: 2)

    @Test("experts are paged in and out within the budget and every answer stays exact")
    func pagesWithinBudget() async throws {
        let model = try SmallModel(shape: Self.shape, seed: 61)
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let addresses = checkpoint.layers.flatMap(\.expertAddresses)
        let perExpert = 3 * 32 * 48 * 4
        // Room for 3 of the 12 experts.
        let service = try ExpertService(checkpoint: checkpoint, experts: addresses, memoryBudgetBytes: 3 * perExpert)
        #expect(service.cache.statistics.residentExperts == 1)
        let rows = model.randomHidden(tokens: 5, seed: 9)
        for round in 0..<2 {
            for address in addresses {
                var request = Moemesh_V1_ComputeRequest()
                request.layer = address.layer
                request.expert = Int32(address.expert)
                request.rows = Moemesh_V1_Tensor(rows, dtype: .f32)
                let response = try await service.compute(request)
                let output = try response.rows.decodeTokenRows(
                    field: "rows", hiddenSize: 32, allowedRanks: [2], shapeDescription: "[N, H]")
                let expected = CPUExpertKernel(
                    weights: try checkpoint.expertWeights(
                        layer: try checkpoint.layer(address.layer), expert: address.expert)
                ).forward(rows)
                #expect(output.matrix.values == expected.values, "round \(round), \(address)")
                #expect(service.cache.statistics.residentBytes <= 3 * perExpert)
            }
        }
        let stats = service.cache.statistics
        // Cycling through 12 experts with room for 3: every use is a load, and all but 3 loads evict one.
        #expect(stats.misses == 24 && stats.hits == 1)
        #expect(stats.evictions == 21)
        #expect(stats.residentExperts == 3)
        try await withDataPlaneServer(service.dataPlaneMethods()) { endpoint in
            try await withClient(of: endpoint) { client in
                let description = try await Moemesh_V1_Expert.Client(wrapping: client).describeExperts(.init())
                #expect(description.cache.evictions == 21 && description.cache.misses == 24)
                #expect(description.cache.budgetBytes == Int64(3 * perExpert) && description.cache.residentExperts == 3)
                #expect(description.experts.count == 12)
            }
        }
    }

    @Test("a budget smaller than one expert is refused at start, saying how much one needs")
    func budgetTooSmall() throws {
        let model = try SmallModel(shape: Self.shape, seed: 62)
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        do {
            _ = try ExpertService(
                checkpoint: checkpoint, experts: checkpoint.layers.flatMap(\.expertAddresses), memoryBudgetBytes: 1000)
            Issue.record("expected a refusal")
        } catch {
            #expect(
                error.description == "memory budget: expected at least one expert's 0 MiB (18432 bytes), got 1000 bytes"
            )
        }
    }
}

@Suite("expert service compute steps", .timeLimit(.minutes(5)))
struct ComputeStepTests {
    /// Holds the first forward pass until opened: the device stays busy while the other calls arrive.
    private final class Gate: Sendable {
        let opened = DispatchSemaphore(value: 0)
        let first = Mutex(true)
    }

    /// A CPU kernel whose first call waits for the gate.
    private struct GatedKernel: ExpertKernel {
        let kernel: CPUExpertKernel
        let gate: Gate
        var hiddenSize: Int { self.kernel.hiddenSize }
        var intermediateSize: Int { self.kernel.intermediateSize }
        func forward(_ rows: Matrix) -> Matrix {
            if self.gate.first.withLock({ first in
                defer { first = false }; return first
            }) {
                self.gate.opened.wait()
            }
            return self.kernel.forward(rows)
        }
    }

    /// A backend of gated CPU kernels, whose grouped step records how many calls each step took.
    private final class RecordingBackend: ExpertBackend, GroupedExpertStep, @unchecked Sendable {
        let steps = Mutex<[Int]>([])
        let gate = Gate()
        var device: ComputeDevice { .cpu }
        var summary: String { "recording" }
        var concurrency: Int { 1 }
        var groupedStep: (any GroupedExpertStep)? { self }
        var precisions: [WeightPrecision] { [.f32] }
        func makeKernel(_ weights: ExpertWeights, precision: WeightPrecision) throws -> (
            kernel: any ExpertKernel, bytes: Int
        ) {
            let kernel = CPUExpertKernel(weights: weights)
            return (GatedKernel(kernel: kernel, gate: self.gate), kernel.residentBytes)
        }
        func forward(_ work: [(kernel: any ExpertKernel, rows: Matrix)]) throws -> [Matrix] {
            self.steps.withLock { $0.append(work.count) }
            return try work.map { try $0.kernel.forward($0.rows) }
        }
    }

    @Test("calls that arrive while a step runs are run together as one grouped step, each answer its own")
    func groupsWaitingCalls() async throws {
        let model = try SmallModel(shape: ExpertMemoryBudgetTests.shape, seed: 63)
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let addresses = checkpoint.layers.flatMap(\.expertAddresses)
        let backend = RecordingBackend()
        let service = try ExpertService(checkpoint: checkpoint, experts: addresses, backend: backend)
        let rows = model.randomHidden(tokens: 3, seed: 4)
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for address in addresses {
                group.addTask {
                    var request = Moemesh_V1_ComputeRequest()
                    request.layer = address.layer
                    request.expert = Int32(address.expert)
                    request.rows = Moemesh_V1_Tensor(rows, dtype: .f32)
                    let output = try await service.compute(request).rows.decodeTokenRows(
                        field: "rows", hiddenSize: 32, allowedRanks: [2], shapeDescription: "[N, H]")
                    let expected = CPUExpertKernel(
                        weights: try checkpoint.expertWeights(
                            layer: try checkpoint.layer(address.layer), expert: address.expert)
                    ).forward(rows)
                    return output.matrix.values == expected.values
                }
            }
            // The first call holds the device; once the other 11 wait behind it, let it go: they are one step.
            try #require(await service.computeQueueChanges.wait { service.waitingComputeCalls >= 11 })
            backend.gate.opened.signal()
            for try await correct in group { #expect(correct) }
        }
        let steps = backend.steps.withLock { $0 }
        #expect(steps == [11], "steps: \(steps)")
    }
}

@Suite("prefetch hints", .timeLimit(.minutes(5)))
struct PrefetchTests {
    @Test(
        "hints wait for the service that owns them, the oldest dropped beyond its capacity; they run once it does and end with it"
    )
    func hintsOwnedByTheirService() async {
        let hints = PrefetchHints(capacity: 2)
        let (sent, sending) = AsyncStream.makeStream(of: Int.self)
        // Queued before the service runs: nothing is sent yet, and the third pushes the first out.
        #expect(hints.send { sending.yield(1) })
        #expect(hints.send { sending.yield(2) })
        #expect(!hints.send { sending.yield(3) })
        await withDiscardingTaskGroup { group in
            group.addTask { await hints.run() }
            var received: [Int] = []
            for await id in sent {
                received.append(id)
                if received.count == 2 { break }
            }
            #expect(received.sorted() == [2, 3])
            group.cancelAll()
        }
        // Its run over, the service takes no more hints.
        #expect(!hints.send { sending.yield(4) })
    }

    /// Polls `condition` every 10 ms for up to 5 s.
    private func eventually(_ condition: () async throws -> Bool) async throws -> Bool {
        for _ in 0..<500 {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    @Test(
        "Prefetch starts loading the hosted experts that are not resident; the use after it is a hit; unknown ones are refused"
    )
    func expertPrefetch() async throws {
        let model = try SmallModel(shape: ExpertMemoryBudgetTests.shape, seed: 64)
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let addresses = checkpoint.layers.flatMap(\.expertAddresses)
        let perExpert = 3 * 32 * 48 * 4
        let service = try ExpertService(checkpoint: checkpoint, experts: addresses, memoryBudgetBytes: 3 * perExpert)
        let first = addresses[0], wanted = [addresses[4], addresses[7]]
        #expect(service.cache.isResident(first))
        let loading = try service.prefetch(wanted + [first])
        #expect(loading == wanted.sorted())
        #expect(await service.cache.changes.wait { wanted.allSatisfy(service.cache.isResident) })
        #expect(service.cache.statistics.prefetches == 2 && service.cache.statistics.misses == 1)
        var request = Moemesh_V1_ComputeRequest()
        request.layer = wanted[0].layer
        request.expert = Int32(wanted[0].expert)
        request.rows = Moemesh_V1_Tensor(model.randomHidden(tokens: 2, seed: 3), dtype: .f32)
        _ = try await service.compute(request)
        #expect(service.cache.statistics.hits == 1 && service.cache.statistics.misses == 1)
        #expect(throws: ExpertError.self) { try service.prefetch([ExpertAddress(layer: "0", expert: 99)]) }
    }

    @Test("with --prefetch-next-layer the router hints layer 1's likely experts while layer 0 runs; without, none")
    func routerHintsNextLayer() async throws {
        let model = try SmallModel(shape: ExpertMemoryBudgetTests.shape, seed: 65)
        defer { model.remove() }
        let hidden = model.randomHidden(tokens: 16, seed: 5)
        var routing = RoutingConfiguration()
        routing.prefetchNextLayer = true
        try await withLoopbackMesh(model: model, routing: routing, expertMemoryBudgetBytes: 4 * 3 * 32 * 48 * 4) {
            router, expert in
            var request = Moemesh_V1_ForwardRequest()
            request.layer = "0"
            request.hiddenStates = Moemesh_V1_Tensor(hidden, dtype: .f32)
            _ = try await router.forward(request)
            // The hint is sent beside layer 0's calls and lands at once; the bound only limits how long a broken
            // build takes to fail.
            let hinted = try await self.eventually { try await expert.describeExperts(.init()).cache.prefetches > 0 }
            #expect(hinted)
        }
        // Without the flag the router has no hook to send a hint with (the same wiring as `buildRouterServices`).
        let executor = RemoteExpertExecutor(
            topology: ExpertTopology(replicas: [:]), wireDType: .f32)
        #expect(executor.prefetchHook(RoutingConfiguration(), hints: PrefetchHints()) == nil)
        #expect(executor.prefetchHook(routing, hints: PrefetchHints()) != nil)
    }
}

@Suite("expert cache metrics")
struct CacheMetricsTests {
    @Test(
        "under concurrent calls the /metrics cache counters equal the cache's own statistics, each change counted once")
    func countersMatchStatistics() async throws {
        let model = try SmallModel(shape: ExpertMemoryBudgetTests.shape, seed: 66)
        defer { model.remove() }
        let registry = PrometheusCollectorRegistry()
        let perExpert = 3 * 32 * 48 * 4
        let rows = model.randomHidden(tokens: 2, seed: 8)
        let stats = try await withMetricsFactory(PrometheusMetricsFactory(registry: registry)) {
            let checkpoint = try MoECheckpoint(path: model.path)
            let addresses = checkpoint.layers.flatMap(\.expertAddresses)
            let service = try ExpertService(
                checkpoint: checkpoint, experts: addresses, memoryBudgetBytes: 2 * perExpert)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for call in 0..<48 {
                    let address = addresses[call % addresses.count]
                    group.addTask {
                        var request = Moemesh_V1_ComputeRequest()
                        request.layer = address.layer
                        request.expert = Int32(address.expert)
                        request.rows = Moemesh_V1_Tensor(rows, dtype: .f32)
                        _ = try await service.compute(request)
                    }
                }
                try await group.waitForAll()
            }
            return service.cache.statistics
        }
        let text = registry.emitToString()
        #expect(stats.evictions > 0)
        #expect(ObservabilityTests.value(text, "moemesh_expert_cache_misses_total") == Double(stats.misses))
        #expect(ObservabilityTests.value(text, "moemesh_expert_cache_hits_total") == Double(stats.hits))
        #expect(ObservabilityTests.value(text, "moemesh_expert_cache_evictions_total") == Double(stats.evictions))
        #expect(ObservabilityTests.value(text, "moemesh_expert_cache_resident_bytes") == Double(stats.residentBytes))
    }
}
