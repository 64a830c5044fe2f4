import MoECore
import MoEModel

/// The experts one replica hosts, scaled together: one `moemesh expert --experts SELECTION` process, container or
/// pod. Its name is the selection (`*:3`) unless a deployment names it otherwise.
public struct ScalingGroup: Sendable, Hashable, CustomStringConvertible {
    public let name: String
    /// The `--experts` selection its replicas are started with.
    public let selection: String
    public let experts: [ExpertAddress]

    public init(name: String, selection: String, experts: [ExpertAddress]) {
        self.name = name
        self.selection = selection
        self.experts = experts
    }

    public var description: String { self.name }

    /// One group per expert index across the layers (`*:0`, `*:1`, …), and one for the shared experts (`*:shared`):
    /// the layout of `moemesh up`.
    public static func perExpertIndex(layers: [MoELayerSpec]) -> [ScalingGroup] {
        Self.perExpertIndex(layers: layers, expertsPerGroup: 1)
    }

    /// Groups of `expertsPerGroup` consecutive expert indices across every layer (`*:0-3`, `*:4-7`, …: one process
    /// per group), and one for the shared experts: a 64-expert model in 8 processes instead of 64.
    public static func perExpertIndex(layers: [MoELayerSpec], expertsPerGroup: Int) -> [ScalingGroup] {
        let count = layers.map(\.numExperts).max() ?? 0
        let size = max(1, expertsPerGroup)
        var groups = stride(from: 0, to: count, by: size).map { first in
            let indices = first..<min(count, first + size)
            let name = indices.count == 1 ? "*:\(first)" : "*:\(first)-\(indices.upperBound - 1)"
            return ScalingGroup(
                name: name, selection: name,
                experts: indices.flatMap { index in
                    layers.filter { index < $0.numExperts }.map { ExpertAddress(layer: $0.name, expert: index) }
                })
        }
        let shared = layers.filter { $0.sharedExpert != nil }.map {
            ExpertAddress(layer: $0.name, expert: ExpertAddress.shared)
        }
        if !shared.isEmpty { groups.append(ScalingGroup(name: "*:shared", selection: "*:shared", experts: shared)) }
        return groups
    }
}

/// A registered replica, as the scaler needs to stop it.
public struct RetiringReplica: Sendable {
    public let endpoint: String
    /// Process id (local processes) or pod name (Kubernetes), as the replica registered it.
    public let instance: String

    public init(endpoint: String, instance: String) {
        self.endpoint = endpoint
        self.instance = instance
    }
}

/// Starts and stops expert replicas: local processes, Kubernetes Deployments, or nothing (replicas started by hand).
public protocol ExpertScaler: Sendable {
    /// "local", "kubernetes", "none".
    var name: String { get }
    /// Whether it can start replicas (autoscaling and cold start need it).
    var canStart: Bool { get }
    /// The groups it manages and the replicas each runs now.
    func initialGroups() async throws -> [(group: ScalingGroup, replicas: Int)]
    /// Runs `replicas` replicas of `group` (starting more when needed).
    func setReplicas(_ replicas: Int, of group: ScalingGroup) async throws
    /// Stops `replica` (already drained: no router sends it work) and leaves `replicas` replicas of `group`.
    func retire(_ replica: RetiringReplica, leaving replicas: Int, of group: ScalingGroup) async throws
    /// Background work until cancelled or shut down (restarting replicas that died); may return at once.
    func run() async throws
}

/// Why a scaler could not act.
public struct ScalerError: Error, CustomStringConvertible {
    public let description: String

    public init(_ description: String) { self.description = description }
}

/// No scaler: replicas are started and stopped by someone else; the coordinator only keeps the registry.
public struct StaticScaler: ExpertScaler {
    public init() {}

    public var name: String { "none" }
    public var canStart: Bool { false }

    public func initialGroups() async throws -> [(group: ScalingGroup, replicas: Int)] { [] }

    public func setReplicas(_ replicas: Int, of group: ScalingGroup) async throws {
        throw ScalerError("the coordinator runs without a scaler (--scaler none): start replicas of \(group) by hand")
    }

    public func retire(_ replica: RetiringReplica, leaving replicas: Int, of group: ScalingGroup) async throws {}

    public func run() async throws {}
}
