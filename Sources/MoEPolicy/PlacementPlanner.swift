import MoECore
import MoEModel

/// Which experts share a process and how many replicas each process gets, from the mesh's own telemetry
/// (`moemesh plan`). Pure: no I/O.
///
/// 1. **Groups** (per layer, at most `expertsPerGroup` experts each): the pairs of experts chosen together most often
///    are joined first (greedy on the co-activation counts, union of groups while they fit), so that a token's
///    experts sit in fewer processes; experts left alone are packed by index. The shared expert has a group of its own.
/// 2. **Replicas** (EPLB-style): every group gets one; while the nodes' memory (and `maxExtraReplicas`) allows, the
///    group with the most load per replica gets one more (at most one per node).
/// 3. **Nodes**: replicas, heaviest first, each on the least-loaded node with room that holds no replica of the same
///    group.
public enum PlacementPlanner {
    public struct Constraints: Sendable, Equatable {
        public var nodes: Int
        public var nodeMemoryBytes: Int
        public var expertsPerGroup: Int
        /// Replicas beyond one per group (EPLB's redundant experts); nil: as many as the nodes' memory holds.
        public var maxExtraReplicas: Int?
        public var grouping: Grouping

        public init(
            nodes: Int, nodeMemoryBytes: Int, expertsPerGroup: Int, maxExtraReplicas: Int? = nil,
            grouping: Grouping = .coactivation
        ) {
            self.nodes = nodes
            self.nodeMemoryBytes = nodeMemoryBytes
            self.expertsPerGroup = expertsPerGroup
            self.maxExtraReplicas = maxExtraReplicas
            self.grouping = grouping
        }
    }

    /// How experts are put into groups.
    public enum Grouping: String, Sendable, Equatable, CaseIterable {
        /// Pairs chosen together most often share a group (step 1).
        case coactivation
        /// Consecutive indices (`0…n−1`, `n…2n−1`, …): the static layout, for EPLB replication alone.
        case consecutive
    }

    public struct Group: Codable, Sendable, Equatable {
        /// `moemesh-expert-L<layer>-g<index>` (Kubernetes-safe after lowercasing).
        public var name: String
        public var layer: String
        /// Expert indices, `-1` for the shared expert.
        public var experts: [Int]
        /// What `moemesh expert --experts` takes.
        public var selection: String
        public var replicas: Int
        /// Bytes of weights one replica holds.
        public var bytes: Int
        /// Rows per second routed to its experts.
        public var load: Double
    }

    public struct Plan: Codable, Sendable, Equatable {
        public var groups: [Group]
        /// Per node, the groups of the replicas placed there.
        public var nodes: [[String]]
        /// Co-activated tokens whose pair of experts sits in one group, over all counted pairs: the plan's and that of
        /// groups of consecutive indices of the same size (the static placement).
        public var pairsInsideGroups: Double
        public var pairsInsideConsecutiveGroups: Double
        /// mean / max of the load per replica over groups (1: even).
        public var replicaBalancedness: Double
        /// Expert services per token per layer under the plan's groups, and under the groups serving when the
        /// telemetry was read (set by the caller); nil where `servicesPerToken` cannot tell.
        public var servicesPerToken: Double?
        public var servicesPerTokenNow: Double?
    }

    public struct PlanError: Error, Sendable, Equatable, CustomStringConvertible {
        public let description: String
        public init(_ description: String) { self.description = description }
    }

    /// Plans `layers` whose experts each hold `bytesPerExpert` (a shared expert `sharedBytes[layer]`), under the
    /// telemetry's demand (rows/s per expert) and co-activation (per layer).
    public static func plan(
        layers: [MoELayerSpec], bytesPerExpert: Int, sharedBytes: [String: Int] = [:],
        telemetry: PlacementTelemetry, constraints: Constraints
    ) throws(PlanError) -> Plan {
        let (demand, coactivation) = (telemetry.demand, telemetry.coactivation)
        guard constraints.nodes >= 1, constraints.nodeMemoryBytes > 0, constraints.expertsPerGroup >= 1 else {
            throw PlanError(
                "constraints: expected at least 1 node, a positive memory budget and at least 1 expert per group, got "
                    + "\(constraints.nodes) nodes, \(constraints.nodeMemoryBytes) bytes, \(constraints.expertsPerGroup) per group"
            )
        }
        var groups: [Group] = []
        var inside = 0, consecutiveInside = 0, pairs = 0
        for layer in layers {
            let counts = coactivation[layer.name] ?? Coactivation(experts: layer.numExperts)
            let size = constraints.expertsPerGroup
            let members =
                constraints.grouping == .coactivation
                ? Self.groupExperts(experts: layer.numExperts, counts: counts, size: size)
                : stride(from: 0, to: layer.numExperts, by: size).map { Array($0..<min($0 + size, layer.numExperts)) }
            var groupOf = [Int](repeating: 0, count: layer.numExperts)
            for (index, experts) in members.enumerated() { for expert in experts { groupOf[expert] = index } }
            for (cell, tokens) in counts.counts {
                let (a, b) = (cell / counts.experts, cell % counts.experts)
                pairs += tokens
                if groupOf[a] == groupOf[b] { inside += tokens }
                if a / size == b / size { consecutiveInside += tokens }
            }
            for (index, experts) in members.enumerated() {
                groups.append(
                    Group(
                        name: "moemesh-expert-l\(layer.name.lowercased())-g\(index)", layer: layer.name,
                        experts: experts,
                        selection: experts.map { "\(layer.name):\($0)" }.joined(separator: ","), replicas: 1,
                        bytes: experts.count * bytesPerExpert,
                        load: experts.reduce(0) { $0 + (demand[ExpertAddress(layer: layer.name, expert: $1)] ?? 0) }))
            }
            if layer.sharedExpert != nil {
                let address = ExpertAddress(layer: layer.name, expert: ExpertAddress.shared)
                groups.append(
                    Group(
                        name: "moemesh-expert-l\(layer.name.lowercased())-shared", layer: layer.name, experts: [-1],
                        selection: "\(layer.name):shared", replicas: 1,
                        bytes: sharedBytes[layer.name] ?? bytesPerExpert, load: demand[address] ?? 0))
            }
        }
        let totalBytes = groups.reduce(0) { $0 + $1.bytes }
        let budget = constraints.nodes * constraints.nodeMemoryBytes
        guard totalBytes <= budget else { throw Self.tooSmall(groups, constraints) }
        // EPLB: one more replica to the group with the most load per replica, while the nodes' memory lasts.
        var used = totalBytes
        var extra = 0
        while extra < constraints.maxExtraReplicas ?? Int.max,
            let index = groups.indices.filter({
                groups[$0].load > 0 && groups[$0].replicas < constraints.nodes && used + groups[$0].bytes <= budget
            }).max(by: {
                (groups[$0].load / Double(groups[$0].replicas), $1) < (
                    groups[$1].load / Double(groups[$1].replicas), $0
                )
            })
        {
            groups[index].replicas += 1
            used += groups[index].bytes
            extra += 1
        }
        // Place every replica, heaviest per replica first; an extra replica that finds no node is dropped, and while a
        // group's only replica finds none, the lightest extra replica of another group gives way.
        var nodes: [[String]]
        while true {
            var placement = Placement(constraints: constraints)
            var unplaced: Int? = nil
            let order = groups.indices.flatMap { index in (0..<groups[index].replicas).map { _ in index } }.sorted {
                (groups[$0].load / Double(groups[$0].replicas), groups[$0].bytes, groups[$1].name)
                    > (groups[$1].load / Double(groups[$1].replicas), groups[$1].bytes, groups[$0].name)
            }
            var placed = [Int](repeating: 0, count: groups.count)
            for index in order {
                if placement.add(groups[index]) {
                    placed[index] += 1
                } else if placed[index] == 0 {
                    unplaced = index
                    break
                }
            }
            guard let missing = unplaced else {
                for index in groups.indices { groups[index].replicas = placed[index] }
                nodes = placement.nodes
                break
            }
            guard
                let lightest = groups.indices.filter({ groups[$0].replicas > 1 }).min(by: {
                    groups[$0].load / Double(groups[$0].replicas) < groups[$1].load / Double(groups[$1].replicas)
                })
            else { throw Self.tooSmall([groups[missing]], constraints, total: totalBytes) }
            groups[lightest].replicas -= 1
        }
        let perReplica = groups.map { $0.load / Double($0.replicas) }
        var groupOf: [ExpertAddress: String] = [:]
        for group in groups {
            for expert in group.experts { groupOf[ExpertAddress(layer: group.layer, expert: expert)] = group.name }
        }
        return Plan(
            groups: groups, nodes: nodes,
            pairsInsideGroups: pairs == 0 ? 0 : Double(inside) / Double(pairs),
            pairsInsideConsecutiveGroups: pairs == 0 ? 0 : Double(consecutiveInside) / Double(pairs),
            replicaBalancedness: AutoscalePolicy.balancedness(perReplica),
            servicesPerToken: Self.servicesPerToken(layers: layers, coactivation: coactivation) { groupOf[$0] })
    }

    /// Groups of at most `size` experts: pairs joined by co-activation count, then the rest packed by index.
    static func groupExperts(experts: Int, counts: Coactivation, size: Int) -> [[Int]] {
        var groupOf = Array(0..<experts)
        var members = (0..<experts).map { [$0] }
        for pair in counts.pairs {
            let (a, b) = (groupOf[pair.a], groupOf[pair.b])
            guard a != b, members[a].count + members[b].count <= size else { continue }
            for expert in members[b] { groupOf[expert] = a }
            members[a] += members[b]
            members[b] = []
        }
        // Join what is left, smallest first, into groups that still have room.
        var groups = members.filter { !$0.isEmpty }.map { $0.sorted() }.sorted {
            $0.count != $1.count ? $0.count > $1.count : $0[0] < $1[0]
        }
        var packed: [[Int]] = []
        while !groups.isEmpty {
            var group = groups.removeFirst()
            while let fit = groups.firstIndex(where: { group.count + $0.count <= size }) {
                group += groups.remove(at: fit)
            }
            packed.append(group.sorted())
        }
        return packed.sorted { $0[0] < $1[0] }
    }

    static func tooSmall(_ groups: [Group], _ constraints: Constraints, total: Int? = nil) -> PlanError {
        let total = total ?? groups.reduce(0) { $0 + $1.bytes }
        return PlanError(
            "no node has \(groups[0].bytes >> 20) MiB free for \(groups[0].name) (one replica of every group needs "
                + "\(total >> 20) MiB; the \(constraints.nodes) nodes have "
                + "\((constraints.nodes * constraints.nodeMemoryBytes) >> 20) MiB): give more nodes, more memory per node, "
                + "or fewer experts per group")
    }

    /// Replicas placed so far: each new one on the least-loaded node with room and no replica of its group.
    struct Placement {
        var nodes: [[String]]
        var free: [Int]
        var load: [Double]

        init(constraints: Constraints) {
            self.nodes = [[String]](repeating: [], count: constraints.nodes)
            self.free = [Int](repeating: constraints.nodeMemoryBytes, count: constraints.nodes)
            self.load = [Double](repeating: 0, count: constraints.nodes)
        }

        /// Places one more replica of `group` (whose `replicas` counts it); false when no node can take it.
        mutating func add(_ group: Group) -> Bool {
            let candidates = self.nodes.indices.filter {
                self.free[$0] >= group.bytes && !self.nodes[$0].contains(group.name)
            }
            guard let node = candidates.min(by: { (self.load[$0], $0) < (self.load[$1], $1) }) else { return false }
            self.nodes[node].append(group.name)
            self.free[node] -= group.bytes
            self.load[node] += group.load / Double(group.replicas)
            return true
        }
    }
}

extension PlacementPlanner {
    /// Mean expert services (groups) a token's experts sit in, per routed layer, from co-activation counts and the
    /// group of each expert: under top-2 routing a token whose pair shares a group reaches 1 service, else 2 (a token
    /// counted without a pair: 1). `Σ_l (tokens_l + Σ_{pairs (a,b) in different groups} n_ab) / Σ_l tokens_l`.
    /// nil when a counted layer routes a token to more than 2 experts (pairs alone do not tell then) or when no token
    /// was counted.
    public static func servicesPerToken(
        layers: [MoELayerSpec], coactivation: [String: Coactivation], groupOf: (ExpertAddress) -> String?
    ) -> Double? {
        var tokens = 0, services = 0
        for layer in layers {
            guard let counts = coactivation[layer.name], counts.tokens > 0 else { continue }
            guard layer.topK <= 2 else { return nil }
            tokens += counts.tokens
            services += counts.tokens
            for (cell, count) in counts.counts {
                let a = groupOf(ExpertAddress(layer: layer.name, expert: cell / counts.experts))
                let b = groupOf(ExpertAddress(layer: layer.name, expert: cell % counts.experts))
                if a == nil || a != b { services += count }
            }
        }
        return tokens == 0 ? nil : Double(services) / Double(tokens)
    }
}
