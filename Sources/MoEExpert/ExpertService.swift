import CoreMetrics
import Dispatch
import GRPCCore
import Logging
import MoECUDA
import MoECore
import MoEKernels
import MoEModel
import MoEProto
import MoEServing
import MoEWire
import Synchronization
import Tracing

/// Serves `Compute` for the experts it hosts: `rows [N, H] → FFN(rows) [N, H]`, in the request's dtype.
public struct ExpertService: Sendable {
    public let modelType: String
    public let hiddenSize: Int
    public let intermediateSize: Int
    /// The hosted experts, in order.
    public let experts: [ExpertAddress]
    /// Their kernels, resident under the memory budget (all of them, without one).
    public let cache: ExpertCache<ExpertAddress>
    /// Rows in flight, rows served and latencies, for heartbeats.
    public let meter = ExpertLoadMeter()
    /// Prometheus series (see `ServiceMetrics`).
    public let metrics = ServiceMetrics()
    /// Added to every `Compute` call (tests and demos: a slower device); nil for none.
    public let computeDelay: Duration?
    /// Rows above it are refused with RESOURCE_EXHAUSTED; nil: only the transport's limit.
    public let payloadLimit: PayloadLimit?
    /// Refuses at once a call that must wait for the device and could not meet its deadline behind the calls ahead;
    /// nil: admits all.
    public let loadShedder: LoadShedder?
    /// The device the kernels run on.
    public let backend: any ExpertBackend
    /// How each hosted expert's weights are stored.
    public let precisions: [ExpertAddress: WeightPrecision]
    /// The gate probes of the checkpoint the experts come from: which model this is (`DescribeExperts`, registration).
    public let gateProbes: GateProbes
    private let steps: ComputeSteps
    /// Compute calls waiting for the device (they run together as the next step).
    public var waitingComputeCalls: Int { self.steps.waitingCalls }
    /// Announced when `waitingComputeCalls` changes.
    public var computeQueueChanges: StateChanges { self.steps.changes }
    /// Loads started by `Prefetch` hints, one at a time, beside the compute steps.
    private let prefetchQueue = DispatchQueue(label: "moemesh.expert.prefetch")
    private let cacheMetrics: CacheMetrics
    /// Each hosted expert's series, made once (a call only increments them).
    private let expertMetrics: [ExpertAddress: ExpertCallMetrics]
    private let rowsInFlight: Gauge

    /// Hosts the `experts` of a checkpoint on `backend`'s device, each stored in the precision `precisions` gives it
    /// (the device's default where it names none: f32 on the CPU, bf16 on a GPU). Without a budget, every expert is
    /// loaded here; with `memoryBudgetBytes` (of the device's memory), experts are loaded on first use and the least
    /// recently used evicted to stay within it (the first is loaded here, to check that one fits).
    public init(
        checkpoint: MoECheckpoint, experts: [ExpertAddress], backend: any ExpertBackend = CPUExpertBackend(),
        precisions: PrecisionPlan = .deviceDefault, computeDelay: Duration? = nil, memoryBudgetBytes: Int? = nil,
        payloadLimit: PayloadLimit? = nil, loadShedder: LoadShedder? = nil
    ) throws(ExpertStartupError) {
        self.payloadLimit = payloadLimit
        self.loadShedder = loadShedder
        for precision in precisions.namedPrecisions.sorted(by: { $0.rawValue < $1.rawValue }) {
            do { try backend.check(precision) } catch { throw .precision(error.description) }
        }
        var precisionOf: [ExpertAddress: WeightPrecision] = [:]
        for address in experts {
            precisionOf[address] =
                precisions.precision(of: address) ?? backend.defaultPrecision
        }
        self.precisions = precisionOf
        var intermediate = 0
        for address in experts {
            let layer: MoELayerSpec
            do { layer = try checkpoint.layer(address.layer) } catch { throw .model(error) }
            guard address.isShared ? layer.sharedExpert != nil : (0..<layer.numExperts).contains(address.expert) else {
                throw .model(.unknownExpert(layer: layer.name, expert: address.expert, numExperts: layer.numExperts))
            }
            if !address.isShared { intermediate = layer.intermediateSize }
        }
        let cache: ExpertCache<ExpertAddress>
        do {
            if let budget = memoryBudgetBytes {
                // Loads on demand: keeps the checkpoint (and its mapping) for later loads.
                cache = ExpertCache(budgetBytes: budget) { [precisionOf] address in
                    try Self.load(address, from: checkpoint, on: backend, precision: precisionOf[address]!)
                }
                if let first = experts.first { _ = try cache.kernel(for: first) }
                if cache.statistics.residentBytes > budget {
                    throw ExpertStartupError.budgetTooSmall(budget: budget, oneExpert: cache.statistics.residentBytes)
                }
            } else {
                cache = ExpertCache(
                    resident: try experts.map { address in
                        let (kernel, bytes) = try Self.load(
                            address, from: checkpoint, on: backend, precision: precisionOf[address]!)
                        return (address, kernel, bytes)
                    })
            }
        } catch let error as ExpertStartupError {
            throw error
        } catch let error as ModelError {
            throw .model(error)
        } catch let error as CUDAError {
            throw .device(error.description)
        } catch let error as WeightPrecisionError {
            throw .precision(error.description)
        } catch {
            throw .model(.invalidConfig(path: checkpoint.folder.path, reason: "\(error)"))
        }
        self.modelType = checkpoint.modelType
        self.hiddenSize = checkpoint.hiddenSize
        do { self.gateProbes = try GateProbes(checkpoint: checkpoint) } catch { throw .model(error) }
        self.intermediateSize = intermediate
        self.experts = experts.sorted()
        self.cache = cache
        self.computeDelay = computeDelay
        self.backend = backend
        self.steps = ComputeSteps(backend: backend, cache: cache)
        self.cacheMetrics = CacheMetrics(cache: cache, metrics: self.metrics)
        let metrics = self.metrics
        self.expertMetrics = Dictionary(
            uniqueKeysWithValues: experts.map { ($0, ExpertCallMetrics(metrics: metrics, address: $0)) })
        self.rowsInFlight = metrics.gauge("moemesh_expert_rows_in_flight")
    }

    /// An expert's kernel on `backend`'s device, in `precision`, and the bytes it holds there.
    static func load(
        _ address: ExpertAddress, from checkpoint: MoECheckpoint, on backend: any ExpertBackend,
        precision: WeightPrecision
    ) throws -> (kernel: any ExpertKernel, bytes: Int) {
        do {
            return try backend.makeKernel(
                try checkpoint.expertWeights(layer: try checkpoint.layer(address.layer), expert: address.expert),
                precision: precision)
        } catch let error as WeightPrecisionError {
            throw ExpertStartupError.precision("expert \(address): \(error)")
        }
    }

    /// The precisions of the hosted experts, compactly: "int8" when they share one, else "f32: layer 0 experts 0-2,
    /// int8: layer 0 experts 3-7".
    public var precisionSummary: String {
        let byPrecision = Dictionary(grouping: self.experts) { self.precisions[$0]! }
        if byPrecision.count == 1 { return byPrecision.keys.first!.rawValue }
        return byPrecision.keys.sorted { $0.rawValue < $1.rawValue }.map { precision in
            "\(precision): " + Self.summary(of: byPrecision[precision]!)
        }.joined(separator: "; ")
    }

    /// Each hosted expert's precision, for `DescribeExperts` and the registration.
    public var precisionMessages: [Moemesh_V1_ExpertPrecision] {
        self.experts.map { address in
            .with {
                $0.expert = Moemesh_V1_ExpertKey(address)
                $0.precision = self.precisions[address]!.rawValue
            }
        }
    }

    /// The hosted experts, compactly: "layer 0 experts 0-7 and shared, layer 1 experts 3".
    public var hostedSummary: String { Self.summary(of: self.experts) }

    /// `experts` compactly: "layer 0 experts 0-7 and shared, layer 1 experts 3".
    static func summary(of experts: [ExpertAddress]) -> String {
        let byLayer = Dictionary(grouping: experts, by: \.layer)
        return byLayer.keys.sorted { ($0.count, $0) < ($1.count, $1) }.map { layer in
            let addresses = byLayer[layer]!
            let routed = addresses.filter { !$0.isShared }.map(\.expert).sorted()
            let shared = addresses.contains { $0.isShared }
            let parts = (routed.isEmpty ? [] : ["experts \(Self.ranges(routed))"]) + (shared ? ["shared expert"] : [])
            return "layer \(layer) " + parts.joined(separator: " and ")
        }.joined(separator: ", ")
    }

    /// "0-3, 5, 7-8".
    static func ranges(_ sorted: [Int]) -> String {
        var parts: [String] = []
        var start = sorted.first
        var previous = sorted.first
        for value in sorted.dropFirst() + [Int.min] {
            if let p = previous, value == p + 1 {
                previous = value
                continue
            }
            if let s = start, let p = previous { parts.append(s == p ? "\(s)" : "\(s)-\(p)") }
            start = value
            previous = value
        }
        return parts.joined(separator: ", ")
    }

    /// A `Compute` call checked: the experts it names (hosted), its rows decoded, and how many rows each expert has.
    struct CheckedCall {
        let addresses: [ExpertAddress]
        /// Rows of each expert, in order; they sum to `rows.matrix.rows`.
        let rowCounts: [Int]
        let rows: DecodedRows

        /// The rows of each expert (no copy for a call of one expert).
        var parts: [ExpertPart] {
            guard self.addresses.count > 1 else {
                return [ExpertPart(address: self.addresses[0], rows: self.rows.matrix)]
            }
            let width = self.rows.matrix.columns
            var start = 0
            return zip(self.addresses, self.rowCounts).map { address, count in
                defer { start += count * width }
                return ExpertPart(
                    address: address,
                    rows: Matrix(
                        rows: count, columns: width,
                        values: Array(self.rows.matrix.values[start..<(start + count * width)])))
            }
        }
    }

    /// Runs the experts the request names, each on its validated rows, when the device is free or the calls
    /// waiting for it leave time to meet the call's deadline (else `overloaded`, at once).
    public func compute(_ request: Moemesh_V1_ComputeRequest) async throws(ExpertError) -> Moemesh_V1_ComputeResponse {
        let call = try self.check(request)
        var admission: LoadShedder.Admission?
        if let shedder = self.loadShedder {
            do {
                admission = try shedder.admit(bytes: request.rows.data.count, deadline: RequestDeadline.current)
            } catch {
                throw .overloaded(error)
            }
        }
        let started = self.begin(call)
        if let delay = self.computeDelay { try? await Task.sleep(for: delay) }  // a simulated slower device
        let result =
            Task.isCancelled
            ? .failure(.cancelled(call.addresses[0])) : await self.steps.run(call.parts)
        if let admission { self.loadShedder?.finished(admission) }
        return try self.end(call, started: started, result)
    }

    /// A free slot of the device for a call answered on the calling thread (the transport's, for a decode call: no
    /// task, no hop); nil when the device is busy or calls wait for it (the call then waits its turn in `compute`).
    public func reserveNow() -> ComputeSlot? {
        guard self.computeDelay == nil, self.steps.reserve() else { return nil }
        return ComputeSlot(steps: self.steps)
    }

    /// `compute` on the calling thread, in `slot` (given back when done).
    public func compute(_ request: Moemesh_V1_ComputeRequest, in slot: ComputeSlot) throws(ExpertError)
        -> Moemesh_V1_ComputeResponse
    {
        guard slot.use() else { preconditionFailure("a compute slot is used once") }
        let call: CheckedCall
        do { call = try self.check(request) } catch {
            self.steps.release()
            throw error
        }
        let started = self.begin(call)
        return try self.end(call, started: started, self.steps.runReserved(call.parts))
    }

    /// The experts the request names, if hosted, and its rows, if within the limit, well formed and split as
    /// `row_counts` says.
    private func check(_ request: Moemesh_V1_ComputeRequest) throws(ExpertError) -> CheckedCall {
        let addresses =
            request.experts.isEmpty
            ? [ExpertAddress(layer: request.layer, expert: Int(request.expert))]
            : request.experts.map { ExpertAddress(layer: request.layer, expert: Int($0)) }
        if !request.experts.isEmpty, request.rowCounts.count != request.experts.count {
            throw .invalidParts(
                "experts names \(request.experts.count) experts but row_counts has \(request.rowCounts.count) counts; "
                    + "expected one count per expert")
        }
        for address in addresses where !self.experts.contains(address) {
            throw .unknownExpert(address, hosted: self.hostedSummary)
        }
        do { try self.payloadLimit?.check(request.rows, field: "rows") } catch { throw .tooLarge(error) }
        let rows: DecodedRows
        do {
            rows = try request.rows.decodeTokenRows(
                field: "rows", hiddenSize: self.hiddenSize, allowedRanks: [2],
                shapeDescription: "[N, \(self.hiddenSize)]")
        } catch { throw .invalidInput(error) }
        guard !request.experts.isEmpty else {
            return CheckedCall(addresses: addresses, rowCounts: [rows.matrix.rows], rows: rows)
        }
        let counts = request.rowCounts.map(Int.init)
        guard counts.allSatisfy({ $0 >= 1 }), counts.reduce(0, +) == rows.matrix.rows else {
            throw .invalidParts(
                "row_counts \(counts) must each be at least 1 and sum to the \(rows.matrix.rows) rows sent")
        }
        return CheckedCall(addresses: addresses, rowCounts: counts, rows: rows)
    }

    /// Counts a call in flight (heartbeats' load, the in-flight gauge); returns when it started.
    private func begin(_ call: CheckedCall) -> ContinuousClock.Instant {
        self.meter.begin(rows: call.rows.matrix.rows)
        self.rowsInFlight.record(self.meter.inFlightRows)
        return .now
    }

    /// Counts the call done (per expert: calls, rows, compute time; a cancellation) and answers its result in the
    /// request's dtype, the experts' rows in the request's order, refusing an output that overflowed.
    private func end(
        _ call: CheckedCall, started: ContinuousClock.Instant, _ result: Result<[Matrix], ExpertError>
    ) throws(ExpertError) -> Moemesh_V1_ComputeResponse {
        let elapsed = ContinuousClock.now - started
        for (address, count) in zip(call.addresses, call.rowCounts) {
            self.meter.end(address, rows: count, started: started)
            // Every checked address is hosted, so its series exist.
            guard let series = self.expertMetrics[address] else { continue }
            series.calls.increment()
            series.rows.increment(by: count)
            series.computeTime.record(duration: elapsed)
            if case .failure(.cancelled) = result {
                self.meter.cancelled()
                series.cancelled.increment()
            }
        }
        self.rowsInFlight.record(self.meter.inFlightRows)
        self.cacheMetrics.publish()
        let outputs = try result.get()
        for (index, output) in outputs.enumerated() where output.values.contains(where: { !$0.isFinite }) {
            // Finite rows in, so a non-finite row out is the input's size, not a fault of the expert.
            let input = call.parts[index].rows
            throw .invalidInput(
                .outputOverflow(
                    field: "rows", what: "the output of \(call.addresses[index])",
                    largestInput: InputError.largestMagnitude(input.values)))
        }
        var response = Moemesh_V1_ComputeResponse()
        if outputs.count == 1 {
            response.rows = Moemesh_V1_Tensor(outputs[0], dtype: call.rows.dtype)
        } else {
            let width = call.rows.matrix.columns
            response.rows = Moemesh_V1_Tensor(
                count: call.rows.matrix.values.count, shape: [call.rows.matrix.rows, width], dtype: call.rows.dtype
            ) { buffer in
                var start = 0
                for output in outputs {
                    _ = output.values.withUnsafeBufferPointer {
                        UnsafeMutableBufferPointer(rebasing: buffer[start..<(start + $0.count)]).initialize(
                            fromContentsOf: $0)
                    }
                    start += output.values.count
                }
            }
        }
        return response
    }
}

extension ExpertService {
    /// Starts loading, in the background, the hosted experts of `experts` that are not resident; returns them.
    /// Throws `unknownExpert` (before loading anything) for one this service does not host.
    public func prefetch(_ experts: [ExpertAddress]) throws(ExpertError) -> [ExpertAddress] {
        for address in experts where !self.experts.contains(address) {
            throw .unknownExpert(address, hosted: self.hostedSummary)
        }
        let missing = Array(Set(experts)).sorted().filter { !self.cache.isResident($0) }
        let cache = self.cache, cacheMetrics = self.cacheMetrics
        for address in missing {
            self.prefetchQueue.async {
                // A failed load is reported by the Compute call that needs the expert, as without the hint.
                _ = try? cache.prefetch(address)
                cacheMetrics.publish()
            }
        }
        return missing
    }
}

/// Publishes the cache's statistics as Prometheus series — hits, misses (loads), prefetches, evictions, load time,
/// resident bytes — each change exactly once, however many calls publish at the same time.
final class CacheMetrics: Sendable {
    private let cache: ExpertCache<ExpertAddress>
    private let metrics: ServiceMetrics
    private let published: Mutex<ExpertCache<ExpertAddress>.Statistics>

    init(cache: ExpertCache<ExpertAddress>, metrics: ServiceMetrics) {
        self.cache = cache
        self.metrics = metrics
        self.published = Mutex(ExpertCache<ExpertAddress>.Statistics())
    }

    func publish() {
        self.published.withLock { published in
            let now = self.cache.statistics
            let metrics = self.metrics
            metrics.counter("moemesh_expert_cache_hits_total").increment(by: now.hits - published.hits)
            metrics.counter("moemesh_expert_cache_misses_total").increment(by: now.misses - published.misses)
            metrics.counter("moemesh_expert_cache_prefetches_total").increment(
                by: now.prefetches - published.prefetches)
            metrics.counter("moemesh_expert_cache_evictions_total").increment(by: now.evictions - published.evictions)
            if now.loadTime > published.loadTime {
                metrics.timer("moemesh_expert_cache_load_seconds").record(duration: now.loadTime - published.loadTime)
            }
            metrics.gauge("moemesh_expert_cache_resident_bytes").record(now.residentBytes)
            published = now
        }
    }
}

extension ExpertService {
    /// What this service hosts: model, sizes, experts and their precisions, the cache's figures.
    public func describe() -> Moemesh_V1_DescribeExpertsResponse {
        var response = Moemesh_V1_DescribeExpertsResponse()
        response.modelType = self.modelType
        response.hiddenSize = Int32(self.hiddenSize)
        response.intermediateSize = Int32(self.intermediateSize)
        response.experts = self.experts.map(Moemesh_V1_ExpertKey.init)
        response.precisions = self.precisionMessages
        response.gateProbes = self.gateProbes.messages
        let stats = self.cache.statistics
        response.cache = .with {
            $0.hits = Int64(stats.hits)
            $0.misses = Int64(stats.misses)
            $0.evictions = Int64(stats.evictions)
            $0.loadSeconds = stats.loadTime.seconds
            $0.residentBytes = Int64(stats.residentBytes)
            $0.residentExperts = Int32(stats.residentExperts)
            $0.budgetBytes = Int64(stats.budgetBytes ?? 0)
            $0.prefetches = Int64(stats.prefetches)
        }
        return response
    }
}

/// One hosted expert's series: calls, rows, compute time, calls whose caller left first.
private struct ExpertCallMetrics: Sendable {
    let calls: Counter
    let rows: Counter
    let computeTime: CoreMetrics.Timer
    let cancelled: Counter

    init(metrics: ServiceMetrics, address: ExpertAddress) {
        let labels = address.metricLabels
        self.calls = metrics.counter("moemesh_expert_calls_total", labels)
        self.rows = metrics.counter("moemesh_expert_rows_total", labels)
        self.computeTime = metrics.timer("moemesh_expert_compute_seconds", labels)
        self.cancelled = metrics.counter("moemesh_expert_calls_cancelled_total", labels)
    }
}
