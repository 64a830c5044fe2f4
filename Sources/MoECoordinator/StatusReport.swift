#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import MoECore
import MoEProto
import MoEServing

/// What `moemesh status` prints: the coordinator's view as tables for people, or as one JSON object.
public struct StatusReport: Codable, Sendable {
    public struct Group: Codable, Sendable {
        public var group: String
        public var state: String
        public var servingReplicas: Int
        public var desiredReplicas: Int
        public var demandRowsPerSecond: Double
        public var experts: [String]
    }

    public struct Replica: Codable, Sendable {
        public var replicaId: String
        public var group: String
        public var endpoint: String
        public var state: String
        public var device: String
        public var rowsPerSecond: Double
        public var inFlightRows: Int64
        public var latencyP50Ms: Double
        public var latencyP99Ms: Double
        public var lastHeartbeatMs: Int64
    }

    public struct Decision: Codable, Sendable {
        public var atUnixMs: Int64
        public var group: String
        public var fromReplicas: Int
        public var toReplicas: Int
        public var reason: String
    }

    public var modelType: String
    public var scaler: String
    public var autoscale: Bool
    public var topologyVersion: UInt64
    public var routers: [String]
    public var replicaBalancedness: Double
    public var groups: [Group]
    public var replicas: [Replica]
    public var prunedExperts: [String]
    public var decisions: [Decision]

    public init(_ status: Moemesh_V1_CoordinatorStatus) {
        self.modelType = status.modelType
        self.scaler = status.scaler
        self.autoscale = status.autoscale
        self.topologyVersion = status.topologyVersion
        self.routers = status.routers
        self.replicaBalancedness = status.replicaBalancedness
        self.groups = status.groups.map {
            Group(
                group: $0.group, state: $0.state, servingReplicas: Int($0.servingReplicas), desiredReplicas: Int($0.desiredReplicas),
                demandRowsPerSecond: $0.demandRowsPerSecond, experts: $0.experts.map { Self.name($0.address) })
        }
        self.replicas = status.replicas.map {
            Replica(
                replicaId: $0.replica.replicaID, group: $0.replica.group, endpoint: $0.replica.endpoint,
                state: $0.replica.state == .draining ? "draining" : "serving", device: $0.replica.device,
                rowsPerSecond: $0.load.rowsPerSecond, inFlightRows: $0.load.inFlightRows, latencyP50Ms: $0.load.latencyP50Ms,
                latencyP99Ms: $0.load.latencyP99Ms, lastHeartbeatMs: $0.lastHeartbeatMs)
        }
        self.prunedExperts = status.experts.filter(\.pruned).map { Self.name($0.expert.address) }
        self.decisions = status.decisions.map {
            Decision(atUnixMs: $0.atUnixMs, group: $0.group, fromReplicas: Int($0.fromReplicas), toReplicas: Int($0.toReplicas), reason: $0.reason)
        }
    }

    /// "0:3" (layer 0, expert 3), "0:shared".
    static func name(_ address: ExpertAddress) -> String {
        "\(address.layer):\(address.isShared ? "shared" : String(address.expert))"
    }

    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    /// The groups (and, with `replicas`, each replica) as aligned columns, then pruned experts and recent decisions.
    public func table(replicas: Bool = true, decisions: Int = 8) -> String {
        var lines = [
            "model \(self.modelType) · scaler \(self.scaler) · autoscale \(self.autoscale ? "on" : "off") · topology v\(self.topologyVersion)"
                + " · routers \(self.routers.count) · replica balancedness \(DecimalFormat.fixed(self.replicaBalancedness, 2))"
        ]
        lines += Self.columns(
            [["GROUP", "STATE", "REPLICAS", "ROWS/S"]]
                + self.groups.map { [$0.group, $0.state, "\($0.servingReplicas)/\($0.desiredReplicas)", DecimalFormat.fixed($0.demandRowsPerSecond, 0)] })
        if replicas && !self.replicas.isEmpty {
            lines.append("")
            lines += Self.columns(
                [["REPLICA", "GROUP", "ENDPOINT", "STATE", "ROWS/S", "IN FLIGHT", "P50 MS", "P99 MS", "HEARTBEAT MS AGO"]]
                    + self.replicas.map {
                        [$0.replicaId, $0.group, $0.endpoint, $0.state, DecimalFormat.fixed($0.rowsPerSecond, 0), "\($0.inFlightRows)",
                         DecimalFormat.fixed($0.latencyP50Ms, 2), DecimalFormat.fixed($0.latencyP99Ms, 2), "\($0.lastHeartbeatMs)"]
                    })
        }
        if !self.prunedExperts.isEmpty { lines += ["", "pruned from routing: " + self.prunedExperts.joined(separator: ", ")] }
        if decisions > 0 && !self.decisions.isEmpty {
            lines.append("")
            lines.append("recent decisions:")
            lines += self.decisions.suffix(decisions).map {
                "  \(Self.clock($0.atUnixMs)) \($0.group): \($0.fromReplicas) → \($0.toReplicas) (\($0.reason))"
            }
        }
        return lines.joined(separator: "\n")
    }

    /// HH:MM:SS (UTC).
    static func clock(_ unixMilliseconds: Int64) -> String {
        let seconds = Int(unixMilliseconds / 1000) % 86_400
        func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(two(seconds / 3600)):\(two(seconds / 60 % 60)):\(two(seconds % 60))"
    }

    static func columns(_ rows: [[String]]) -> [String] {
        let widths = (0..<(rows.first?.count ?? 0)).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            zip(row, widths).map { $0 + String(repeating: " ", count: $1 - $0.count) }.joined(separator: "  ")
                .replacing(/\s+$/, with: "")
        }
    }
}
