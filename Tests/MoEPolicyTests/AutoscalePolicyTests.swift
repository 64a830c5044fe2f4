import MoEPolicy
import Testing

@Suite("autoscaling policy")
struct AutoscalePolicyTests {
    typealias Load = AutoscalePolicy.GroupLoad

    static func load(_ group: String, replicas: Int, rows: Double, idle: Int = 0, sinceChange: Int = 60) -> Load {
        Load(
            group: group, replicas: replicas, rowsPerSecond: rows, idleFor: .seconds(idle),
            sinceChange: .seconds(sinceChange))
    }

    static let settings = AutoscalePolicy.Settings(maxTotalReplicas: 8, maxReplicasPerGroup: 4, cooldown: .seconds(5))

    @Test("the hottest group gets replicas EPLB-style until its load per replica is within the band")
    func replicatesHottest() {
        // Zipf-like: loads 600, 300, 200, 150 over one replica each; mean per replica 312.5.
        let groups = [
            Self.load("a", replicas: 1, rows: 600), Self.load("b", replicas: 1, rows: 300),
            Self.load("c", replicas: 1, rows: 200), Self.load("d", replicas: 1, rows: 150),
        ]
        let decisions = AutoscalePolicy(settings: Self.settings).decide(groups)
        // a: 600 ≥ 1.5 × 250 (mean after nothing added: 1250/4 = 312.5 → 469) → 2 replicas; then 300 per replica
        // vs mean 1250/5 = 250 × 1.5 = 375: stop. One decision, for a.
        #expect(decisions.map(\.group) == ["a"])
        #expect(decisions.first.map { ($0.from, $0.to) } ?? (0, 0) == (1, 2))
        #expect(decisions.first?.reason.hasPrefix("hot:") == true)
    }

    @Test("a balanced mesh is left alone (hysteresis band)")
    func balancedStays() {
        let groups = [
            Self.load("a", replicas: 1, rows: 300), Self.load("b", replicas: 1, rows: 250),
            Self.load("c", replicas: 2, rows: 500), Self.load("d", replicas: 1, rows: 220),
        ]
        #expect(AutoscalePolicy(settings: Self.settings).decide(groups).isEmpty)
    }

    @Test("the budget caps the replicas added; the per-group cap too")
    func budget() {
        var settings = Self.settings
        settings.maxTotalReplicas = 3
        let groups = [
            Self.load("a", replicas: 1, rows: 10_000), Self.load("b", replicas: 1, rows: 10),
            Self.load("c", replicas: 1, rows: 10),
        ]
        #expect(AutoscalePolicy(settings: settings).decide(groups).isEmpty)
        settings.maxTotalReplicas = 4
        settings.maxReplicasPerGroup = 2
        let decisions = AutoscalePolicy(settings: settings).decide(groups)
        #expect(decisions.count == 1 && decisions[0].to == 2)
    }

    @Test("surplus replicas go, one at a time, when the rest would still be below the mean")
    func removesSurplus() {
        // The load moved from a to b and c: a gives one replica back (and b, c, now hot, get one each).
        let groups = [
            Self.load("a", replicas: 3, rows: 90), Self.load("b", replicas: 1, rows: 300),
            Self.load("c", replicas: 1, rows: 310),
        ]
        let decisions = AutoscalePolicy(settings: Self.settings).decide(groups)
        let a = decisions.first { $0.group == "a" }
        #expect(a.map { ($0.from, $0.to) } ?? (0, 0) == (3, 2))
        #expect(a?.reason.hasPrefix("surplus:") == true)
        // Only one fewer, even though 90 rows/s over 1 replica would still be below the mean.
        #expect(decisions.filter { $0.to < $0.from }.count == 1)
        // With a's load back, it keeps its replicas.
        let back = [
            Self.load("a", replicas: 3, rows: 600), Self.load("b", replicas: 1, rows: 300),
            Self.load("c", replicas: 1, rows: 310),
        ]
        #expect(AutoscalePolicy(settings: Self.settings).decide(back).allSatisfy { $0.group != "a" })
    }

    @Test("an idle group goes to zero after the idle time, not before; never without an idle time")
    func idleToZero() {
        var settings = Self.settings
        settings.idleTimeout = .seconds(10)
        let busy = Self.load("a", replicas: 1, rows: 100)
        #expect(
            AutoscalePolicy(settings: settings).decide([busy, Self.load("b", replicas: 1, rows: 0, idle: 9)]).allSatisfy
            { $0.group != "b" })
        let decisions = AutoscalePolicy(settings: settings).decide([
            busy, Self.load("b", replicas: 1, rows: 0, idle: 10),
        ])
        #expect(decisions.map(\.group) == ["b"] && decisions.first?.to == 0)
        #expect(decisions.first?.reason.hasPrefix("idle:") == true)
        settings.idleTimeout = nil
        #expect(
            AutoscalePolicy(settings: settings).decide([busy, Self.load("b", replicas: 1, rows: 0, idle: 100)])
                .allSatisfy { $0.group != "b" })
    }

    @Test("a group changed within the cooldown is left alone")
    func cooldown() {
        let groups = [
            Self.load("a", replicas: 1, rows: 600, sinceChange: 2), Self.load("b", replicas: 1, rows: 100),
            Self.load("c", replicas: 1, rows: 100),
        ]
        #expect(AutoscalePolicy(settings: Self.settings).decide(groups).allSatisfy { $0.group != "a" })
    }

    @Test("balancedness is mean / max")
    func balancedness() {
        #expect(AutoscalePolicy.balancedness([100, 100]) == 1)
        #expect(AutoscalePolicy.balancedness([300, 100, 100, 100]) == 0.5)
        #expect(AutoscalePolicy.balancedness([]) == 1)
    }
}
