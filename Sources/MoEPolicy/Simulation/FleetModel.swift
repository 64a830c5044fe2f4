/// Seconds one job takes on one slot: `fixed + perRow · rows`.
public struct ServiceTime: Sendable, Equatable, Codable {
    public var fixed: Double
    public var perRow: Double

    public init(fixed: Double, perRow: Double) {
        self.fixed = fixed
        self.perRow = perRow
    }

    public func seconds(rows: Int) -> Double { self.fixed + self.perRow * Double(rows) }

    /// The least-squares line through `(rows, seconds)` samples (at least two distinct row counts); a negative
    /// intercept or slope is clamped to 0.
    public static func fit(_ samples: [(rows: Double, seconds: Double)]) -> ServiceTime? {
        let n = Double(samples.count)
        let meanRows = samples.reduce(0) { $0 + $1.rows } / n
        let meanSeconds = samples.reduce(0) { $0 + $1.seconds } / n
        let spread = samples.reduce(0) { $0 + ($1.rows - meanRows) * ($1.rows - meanRows) }
        guard samples.count >= 2, spread > 0 else { return nil }
        let slope = max(0, samples.reduce(0) { $0 + ($1.rows - meanRows) * ($1.seconds - meanSeconds) } / spread)
        return ServiceTime(fixed: max(0, meanSeconds - slope * meanRows), perRow: slope)
    }
}

/// How a node's jobs share its slots.
public enum NodeDiscipline: String, Sendable, Equatable, CaseIterable {
    /// Each job holds a slot until done; the rest wait in arrival order (a GPU's streams, a thread pool).
    case fifo
    /// Every job runs at once, at `min(1, slots / jobs)` of a slot (processes on a CPU's cores under the kernel's
    /// time slicing).
    case shared
}

/// A router's dynamic batching (`ForwardBatcher`): per layer, up to `maxConcurrentBatches` batches at once; a request
/// that finds none free queues; a leader waits `maxDelay` for more requests only while the layer's previous batch held
/// more than one, then takes the queued requests up to `maxTokens` tokens.
public struct Batching: Sendable, Equatable {
    public var maxTokens = 4096
    public var maxDelay = 0.002
    public var maxConcurrentBatches = 2

    public init(maxTokens: Int = 4096, maxDelay: Double = 0.002, maxConcurrentBatches: Int = 2) {
        self.maxTokens = maxTokens
        self.maxDelay = maxDelay
        self.maxConcurrentBatches = maxConcurrentBatches
    }
}

/// A fleet to simulate (`moemesh simulate`): nodes, the model's MoE layers, what a call and a hop cost, the load,
/// and the coordinator's timings. Times in seconds, sizes in bytes.
public struct FleetModel: Sendable, Equatable {
    public var nodes = 64
    /// Expert calls a node serves at once (cores, or a GPU's concurrent streams).
    public var slotsPerNode = 8
    /// How a node's jobs share its slots.
    public var discipline = NodeDiscipline.fifo
    /// 0: every job takes its mean; 1: exponentially distributed around it; between: a mix (`1 − j + j · Exp(1)`).
    public var serviceJitter = 0.0
    public var nodeMemoryBytes = 80 << 30

    public var layers = 4
    public var experts = 1000
    public var topK = 8
    public var hiddenSize = 4096
    public var intermediateSize = 1536
    /// Bytes per weight (2: bf16) and per value on the wire.
    public var weightBytes = 2
    public var wireBytes = 2
    public var expertsPerGroup = 8
    /// Replicas beyond one per group for EPLB and the planner, as a share of the groups (DeepSeek-V3 serves 32
    /// redundant experts for 256: 0.125).
    public var extraReplicaShare = 0.125

    /// An expert call on one slot, by rows.
    public var call = ServiceTime(fixed: 150e-6, perRow: 25e-6)
    /// The router's work for one layer of one batch (gate, dispatch, combine), by tokens.
    public var router = ServiceTime(fixed: 60e-6, perRow: 4e-6)
    /// The client's own work for one layer of its request (encoding, decoding), by tokens; 0 for clients elsewhere.
    public var client = ServiceTime(fixed: 0, perRow: 0)
    /// Routers; client `c` calls router `c mod routers`.
    public var routers = 16
    /// The routers' dynamic batching (`moemesh router --batching`, with its defaults); nil: each request alone.
    public var batching: Batching? = Batching()
    /// nil: the router's (and client's) work delays its request but queues for nothing (routers scale apart); a node
    /// index: it runs on that node's slots (a mesh on one machine).
    public var routerNode: Int? = nil
    /// One-way latency of a hop router ↔ expert, and the bandwidth a message crosses it at.
    public var hopLatency = 50e-6
    public var bandwidth = 12.5e9

    /// Closed loop: each client sends a request of `tokensPerRequest` tokens through every layer in turn, then the next.
    public var clients = 2048
    public var tokensPerRequest = 8
    public var routing = TokenRouting.zipf(exponent: 1.0, affinity: 0.5, teamSize: 8)
    /// Tokens per layer sampled for the telemetry the planners read (demand and co-activation).
    public var telemetryTokens = 20000
    public var warmUp = 2.0
    public var measured = 4.0

    /// Autoscaling (scenarios with scale to zero): the coordinator's policy, run every `policyInterval` over demand
    /// averaged across `demandWindow`; a started replica serves after `coldStart`.
    public var policyInterval = 0.5
    public var demandWindow = 2.0
    public var cooldown = 1.0
    public var idleTimeout = 2.0
    public var coldStart = 1.0
    public var seed: UInt64 = 1

    public init() {}

    /// Redundant replicas for `groups` groups.
    public func extraReplicas(groups: Int) -> Int { Int((self.extraReplicaShare * Double(groups)).rounded()) }

    /// Bytes of one expert's weights (gated FFN: three `H × I` matrices).
    public var bytesPerExpert: Int { 3 * self.hiddenSize * self.intermediateSize * self.weightBytes }

    /// What is wrong with the model, or nil.
    public var problem: String? {
        func positive(_ name: String, _ value: Int) -> String? {
            value >= 1 ? nil : "\(name): expected at least 1, got \(value)"
        }
        if let problem = [
            positive("nodes", self.nodes), positive("slots per node", self.slotsPerNode),
            positive("layers", self.layers), positive("experts", self.experts), positive("top-k", self.topK),
            positive("hidden size", self.hiddenSize), positive("intermediate size", self.intermediateSize),
            positive("experts per group", self.expertsPerGroup), positive("clients", self.clients),
            positive("tokens per request", self.tokensPerRequest), positive("telemetry tokens", self.telemetryTokens),
            positive("routers", self.routers), positive("batch max tokens", self.batching?.maxTokens ?? 1),
            positive("batches per layer", self.batching?.maxConcurrentBatches ?? 1),
        ].compactMap({ $0 }).first {
            return problem
        }
        if self.topK > self.experts { return "top-k: expected at most the \(self.experts) experts, got \(self.topK)" }
        if let node = self.routerNode, !(0..<self.nodes).contains(node) {
            return "router node: expected 0..<\(self.nodes), got \(node)"
        }
        let times: [(String, Double)] = [
            ("warm-up", self.warmUp), ("hop latency", self.hopLatency), ("call fixed", self.call.fixed),
            ("call per row", self.call.perRow), ("router fixed", self.router.fixed),
            ("router per token", self.router.perRow), ("client fixed", self.client.fixed),
            ("client per token", self.client.perRow), ("batch delay", self.batching?.maxDelay ?? 0),
            ("cold start", self.coldStart), ("cooldown", self.cooldown),
            ("idle timeout", self.idleTimeout), ("extra replica share", self.extraReplicaShare),
            ("service jitter", self.serviceJitter),
        ]
        if let (name, value) = times.first(where: { !($0.1 >= 0 && $0.1.isFinite) }) {
            return "\(name): expected a finite value ≥ 0, got \(value)"
        }
        let rates: [(String, Double)] = [
            ("measured seconds", self.measured), ("bandwidth", self.bandwidth),
            ("policy interval", self.policyInterval), ("demand window", self.demandWindow),
        ]
        if let (name, value) = rates.first(where: { !($0.1 > 0 && $0.1.isFinite) }) {
            return "\(name): expected a finite value > 0, got \(value)"
        }
        if self.serviceJitter > 1 { return "service jitter: expected 0…1, got \(self.serviceJitter)" }
        if case .zipf(let exponent, let affinity, let teamSize) = self.routing {
            if !(exponent >= 0 && exponent.isFinite) { return "zipf exponent: expected ≥ 0, got \(exponent)" }
            if !(0...1).contains(affinity) { return "affinity: expected 0…1, got \(affinity)" }
            if teamSize < 1 { return "team size: expected at least 1, got \(teamSize)" }
        }
        if case .recorded(let layers) = self.routing, layers.isEmpty { return "recorded routing: no layers" }
        return nil
    }
}
