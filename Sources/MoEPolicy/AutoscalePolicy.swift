/// The autoscaling rule, as a pure function of each group's demand and replicas.
///
/// With `L_g` the demand of group g (rows/s routed to its experts), `r_g` its replicas and
/// `m = Σ L_g / Σ r_g` the mean load per replica (groups with replicas only):
/// - **idle**: a group with no demand for `idleTimeout` goes to 0 replicas (it is cold-started on the next request);
/// - **surplus**: a group with `r_g > 1` and `L_g / (r_g − 1) ≤ scaleDownRatio · m` loses one replica;
/// - **hot** (EPLB): while the budget allows, the group with the largest `L_g / r_g` gets one more replica if
///   `L_g / r_g ≥ scaleUpRatio · m` (the ratios leave a band between them: the hysteresis);
/// a group changed less than `cooldown` ago is left alone, so that its load can settle first.
public struct AutoscalePolicy: Sendable {
    public struct Settings: Sendable, Equatable {
        /// Replicas of all groups together.
        public var maxTotalReplicas: Int
        public var maxReplicasPerGroup: Int
        public var scaleUpRatio: Double
        public var scaleDownRatio: Double
        /// Demand below this many rows/s counts as none.
        public var minRowsPerSecond: Double
        public var cooldown: Duration
        /// nil: never scale a group to zero.
        public var idleTimeout: Duration?

        public init(
            maxTotalReplicas: Int, maxReplicasPerGroup: Int = 8, scaleUpRatio: Double = 1.5,
            scaleDownRatio: Double = 0.75, minRowsPerSecond: Double = 1, cooldown: Duration = .seconds(5),
            idleTimeout: Duration? = nil
        ) {
            self.maxTotalReplicas = maxTotalReplicas
            self.maxReplicasPerGroup = maxReplicasPerGroup
            self.scaleUpRatio = scaleUpRatio
            self.scaleDownRatio = scaleDownRatio
            self.minRowsPerSecond = minRowsPerSecond
            self.cooldown = cooldown
            self.idleTimeout = idleTimeout
        }
    }

    /// What the policy knows of one group.
    public struct GroupLoad: Sendable, Equatable {
        public var group: String
        /// Replicas asked for now.
        public var replicas: Int
        /// Rows/s routed to the group's experts.
        public var rowsPerSecond: Double
        /// Time since the group last had demand (or since it was started, if never).
        public var idleFor: Duration
        /// Time since its replicas last changed.
        public var sinceChange: Duration

        public init(group: String, replicas: Int, rowsPerSecond: Double, idleFor: Duration, sinceChange: Duration) {
            self.group = group
            self.replicas = replicas
            self.rowsPerSecond = rowsPerSecond
            self.idleFor = idleFor
            self.sinceChange = sinceChange
        }
    }

    public struct Decision: Sendable, Equatable, CustomStringConvertible {
        public var group: String
        public var from: Int
        public var to: Int
        public var reason: String

        public init(group: String, from: Int, to: Int, reason: String) {
            self.group = group
            self.from = from
            self.to = to
            self.reason = reason
        }

        public var description: String { "\(self.group): \(self.from) → \(self.to) replicas (\(self.reason))" }
    }

    public var settings: Settings

    public init(settings: Settings) { self.settings = settings }

    /// The changes to make now; at most one per group.
    public func decide(_ groups: [GroupLoad]) -> [Decision] {
        let settings = self.settings
        var replicas = groups.map(\.replicas)
        var decisions: [Int: Decision] = [:]
        func settled(_ index: Int) -> Bool { groups[index].sinceChange >= settings.cooldown && decisions[index] == nil }
        func meanPerReplica() -> Double {
            let total = replicas.reduce(0, +)
            guard total > 0 else { return 0 }
            return zip(groups, replicas).filter { $0.1 > 0 }.map(\.0.rowsPerSecond).reduce(0, +) / Double(total)
        }
        func format(_ value: Double) -> String { String(Int(value.rounded())) }

        // Idle groups go to zero.
        if let idleTimeout = settings.idleTimeout {
            for (index, group) in groups.enumerated()
            where replicas[index] > 0 && group.idleFor >= idleTimeout && group.rowsPerSecond < settings.minRowsPerSecond
                && settled(index)
            {
                decisions[index] = Decision(
                    group: group.group, from: replicas[index], to: 0,
                    reason: "idle: no rows routed for \(Int(group.idleFor.components.seconds)) s")
                replicas[index] = 0
            }
        }
        // Surplus replicas go.
        let mean = meanPerReplica()
        for (index, group) in groups.enumerated() where replicas[index] > 1 && settled(index) {
            let afterRemoval = group.rowsPerSecond / Double(replicas[index] - 1)
            if afterRemoval <= settings.scaleDownRatio * mean {
                decisions[index] = Decision(
                    group: group.group, from: replicas[index], to: replicas[index] - 1,
                    reason:
                        "surplus: \(format(group.rowsPerSecond)) rows/s over \(replicas[index] - 1) replicas would be "
                        + "\(format(afterRemoval)) per replica, ≤ \(settings.scaleDownRatio) × mean \(format(mean))")
                replicas[index] -= 1
            }
        }
        // Hot groups get replicas, largest load per replica first, within the budget.
        while replicas.reduce(0, +) < settings.maxTotalReplicas {
            let mean = meanPerReplica()
            let candidates = groups.indices.filter {
                replicas[$0] > 0 && replicas[$0] < settings.maxReplicasPerGroup && settled($0)
                    && groups[$0].rowsPerSecond >= settings.minRowsPerSecond
            }
            guard
                let hottest = candidates.max(by: {
                    groups[$0].rowsPerSecond / Double(replicas[$0]) < groups[$1].rowsPerSecond / Double(replicas[$1])
                })
            else { break }
            let perReplica = groups[hottest].rowsPerSecond / Double(replicas[hottest])
            guard perReplica >= settings.scaleUpRatio * mean, mean > 0 else { break }
            decisions[hottest] = Decision(
                group: groups[hottest].group, from: replicas[hottest], to: replicas[hottest] + 1,
                reason:
                    "hot: \(format(perReplica)) rows/s per replica ≥ \(settings.scaleUpRatio) × mean \(format(mean))")
            replicas[hottest] += 1
        }
        return decisions.keys.sorted().map { decisions[$0]! }
    }

    /// `mean / max` of per-replica loads (1 when even; 1 when there is no load at all).
    public static func balancedness(_ loads: [Double]) -> Double {
        guard let max = loads.max(), max > 0 else { return 1 }
        return loads.reduce(0, +) / Double(loads.count) / max
    }
}
