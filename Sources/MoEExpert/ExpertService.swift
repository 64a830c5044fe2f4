import GRPCCore
import MoECore
import MoEKernels
import MoEModel
import MoEProto
import MoEServing

/// Serves `Compute` for the experts it hosts: `rows [N, H] → FFN(rows) [N, H]`, in the request's dtype.
public struct ExpertService: Sendable {
    public let modelType: String
    public let hiddenSize: Int
    public let intermediateSize: Int
    public let kernels: [ExpertAddress: CPUExpertKernel]
    /// Rows in flight, rows served and latencies, for heartbeats.
    public let meter = ExpertLoadMeter()
    /// Prometheus series (see `ServiceMetrics`).
    public let metrics = ServiceMetrics()
    /// Added to every `Compute` call (tests and demos: a slower device); nil for none.
    public let computeDelay: Duration?
    private let queue: ComputeQueue

    /// Loads the `experts` of a checkpoint (weights widened to f32 once, here).
    public init(checkpoint: MoECheckpoint, experts: [ExpertAddress], computeDelay: Duration? = nil) throws(ModelError) {
        var kernels: [ExpertAddress: CPUExpertKernel] = [:]
        var intermediate = 0
        for address in experts {
            let layer = try checkpoint.layer(address.layer)
            let weights = try checkpoint.expertWeights(layer: layer, expert: address.expert)
            if !address.isShared { intermediate = weights.intermediateSize }
            kernels[address] = CPUExpertKernel(weights: weights)
        }
        self.modelType = checkpoint.modelType
        self.hiddenSize = checkpoint.hiddenSize
        self.intermediateSize = intermediate
        self.kernels = kernels
        self.computeDelay = computeDelay
        self.queue = ComputeQueue()
    }

    /// The hosted experts, compactly: "layer 0 experts 0-7 and shared, layer 1 experts 3".
    public var hostedSummary: String {
        let byLayer = Dictionary(grouping: self.kernels.keys, by: \.layer)
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

    /// Runs one expert on validated rows.
    public func compute(_ request: Moemesh_V1_ComputeRequest) async throws(ExpertError) -> Moemesh_V1_ComputeResponse {
        let address = ExpertAddress(layer: request.layer, expert: Int(request.expert))
        guard let kernel = self.kernels[address] else {
            throw .unknownExpert(address, hosted: self.hostedSummary)
        }
        let rows: DecodedRows
        do {
            rows = try request.rows.decodeTokenRows(
                field: "rows", hiddenSize: self.hiddenSize, allowedRanks: [2], shapeDescription: "[N, \(self.hiddenSize)]")
        } catch { throw .invalidInput(error) }
        let input = rows.matrix
        let started = ContinuousClock.now
        self.meter.begin(rows: input.rows)
        let labels = address.metricLabels
        let metrics = self.metrics
        metrics.gauge("moemesh_expert_rows_in_flight").record(self.meter.inFlightRows)
        defer {
            self.meter.end(address, rows: input.rows, started: started)
            metrics.counter("moemesh_expert_calls_total", labels).increment()
            metrics.counter("moemesh_expert_rows_total", labels).increment(by: input.rows)
            metrics.timer("moemesh_expert_compute_seconds", labels).record(duration: ContinuousClock.now - started)
            metrics.gauge("moemesh_expert_rows_in_flight").record(self.meter.inFlightRows)
        }
        if let delay = self.computeDelay { try? await Task.sleep(for: delay) }
        let output = await self.queue.run { kernel.forward(input) }
        var response = Moemesh_V1_ComputeResponse()
        response.rows = Moemesh_V1_Tensor(output, dtype: rows.dtype)
        return response
    }
}

extension ExpertService: Moemesh_V1_Expert.SimpleServiceProtocol {
    public func compute(
        request: Moemesh_V1_ComputeRequest, context: ServerContext
    ) async throws -> Moemesh_V1_ComputeResponse {
        try await self.compute(request)
    }

    public func describeExperts(
        request: Moemesh_V1_DescribeExpertsRequest, context: ServerContext
    ) async throws -> Moemesh_V1_DescribeExpertsResponse {
        var response = Moemesh_V1_DescribeExpertsResponse()
        response.modelType = self.modelType
        response.hiddenSize = Int32(self.hiddenSize)
        response.intermediateSize = Int32(self.intermediateSize)
        response.experts = self.kernels.keys.sorted().map(Moemesh_V1_ExpertKey.init)
        return response
    }
}
