#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
import MoECoordinator
import MoECore
import MoEPolicy
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
        /// Process id (local processes) or pod name.
        public var instance: String
        /// Routers that ejected it recently, and why.
        public var ejectedBy: [String]
        /// How routers reach it: "ROUTER: unix PATH" (same host, Unix domain socket) or "ROUTER: tcp HOST:PORT".
        public var links: [String]
        /// How its experts' weights are stored: "int8", or "bf16×1, int8×7" when they differ; "-" when it did not say.
        public var precision: String

        /// No call ended in the replica's window (rows/s and latencies cover its last 5 s): latencies are not 0 ms,
        /// there are none.
        public var isIdle: Bool { self.rowsPerSecond == 0 && self.latencyP50Ms == 0 }

        /// "unix", "tcp", both ("unix+tcp": routers differ), or "-" (no router connected).
        public var linkKinds: String {
            let kinds = Set(self.links.compactMap { $0.split(separator: " ").dropFirst().first.map(String.init) })
            return kinds.isEmpty ? "-" : kinds.sorted { $0 > $1 }.joined(separator: "+")
        }
    }

    /// One cell of the heatmap: an expert's demand and replicas.
    public struct Expert: Codable, Sendable {
        public var layer: String
        /// The index, or `shared`.
        public var expert: String
        public var demandRowsPerSecond: Double
        public var servingReplicas: Int
        public var pruned: Bool
    }

    public struct Decision: Codable, Sendable {
        public var atUnixMs: Int64
        public var group: String
        public var fromReplicas: Int
        public var toReplicas: Int
        public var reason: String
    }

    /// One layer's co-activation over the coordinator's demand window: how many tokens chose both experts of a pair.
    public struct Coactivation: Codable, Sendable {
        public var layer: String
        public var numExperts: Int
        /// Tokens counted (with or without a pair).
        public var tokens: Int64
        /// `[a, b, tokens]`, most frequent first.
        public var pairs: [[Int64]]
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
    public var experts: [Expert]
    public var decisions: [Decision]
    public var coactivation: [Coactivation]

    /// The view of a coordinator's status, in process or read over the wire (`CoordinatorStatus(message)`).
    public init(_ status: CoordinatorStatus) {
        self.coactivation = status.coactivation.sorted { $0.key < $1.key }.map { layer, counts in
            Coactivation(
                layer: layer, numExperts: counts.experts, tokens: Int64(counts.tokens),
                pairs: counts.pairs.map { [Int64($0.a), Int64($0.b), Int64($0.tokens)] })
        }
        self.modelType = status.modelType
        self.scaler = status.scaler
        self.autoscale = status.autoscale
        self.topologyVersion = status.topologyVersion
        self.routers = status.routers
        self.replicaBalancedness = status.replicaBalancedness
        self.groups = status.groups.map {
            Group(
                group: $0.group, state: $0.state, servingReplicas: $0.servingReplicas,
                desiredReplicas: $0.desiredReplicas, demandRowsPerSecond: $0.demandRowsPerSecond,
                experts: $0.experts.map(Self.name))
        }
        self.replicas = status.replicas.map {
            Replica(
                replicaId: $0.replica.id, group: $0.replica.group, endpoint: $0.replica.endpoint,
                state: $0.replica.state == .draining ? "draining" : "serving", device: $0.replica.device,
                rowsPerSecond: $0.load.rowsPerSecond, inFlightRows: Int64($0.load.inFlightRows),
                latencyP50Ms: $0.load.latencyP50Ms, latencyP99Ms: $0.load.latencyP99Ms,
                lastHeartbeatMs: Int64($0.sinceHeartbeat.milliseconds), instance: $0.replica.instance,
                ejectedBy: $0.ejectedBy, links: $0.links, precision: Self.precisionSummary($0.replica.precisions))
        }
        self.prunedExperts = status.experts.filter(\.pruned).map { Self.name($0.expert) }
        self.experts = status.experts.map {
            Expert(
                layer: $0.expert.layer, expert: $0.expert.isShared ? "shared" : String($0.expert.expert),
                demandRowsPerSecond: $0.demandRowsPerSecond, servingReplicas: $0.servingReplicas, pruned: $0.pruned)
        }
        self.decisions = status.decisions.map {
            Decision(
                atUnixMs: $0.atUnixMs, group: $0.group, fromReplicas: $0.from, toReplicas: $0.to, reason: $0.reason)
        }
    }

    /// "int8" when every expert has one precision, else "bf16×1, int8×7"; "-" for none.
    static func precisionSummary(_ precisions: [ExpertAddress: String]) -> String {
        let counts = Dictionary(grouping: precisions.values, by: { $0 }).mapValues(\.count)
        if counts.isEmpty { return "-" }
        if counts.count == 1 { return counts.keys.first! }
        return counts.keys.sorted().map { "\($0)×\(counts[$0]!)" }.joined(separator: ", ")
    }

    /// `LAYER:EXPERT` (`LAYER:shared`), as the status names experts.
    public static func name(_ address: ExpertAddress) -> String {
        "\(address.layer):\(address.isShared ? "shared" : String(address.expert))"
    }

    /// Reads what `json()` wrote (`moemesh status --json`, saved to a file).
    public static func decode(json bytes: [UInt8]) throws -> StatusReport {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(StatusReport.self, from: Data(bytes))
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
                + self.groups.map {
                    [
                        $0.group, $0.state, "\($0.servingReplicas)/\($0.desiredReplicas)",
                        DecimalFormat.fixed($0.demandRowsPerSecond, 0),
                    ]
                })
        if replicas && !self.replicas.isEmpty {
            lines.append("")
            lines += Self.columns(
                [
                    [
                        "REPLICA", "GROUP", "ENDPOINT", "LINK", "PRECISION", "STATE", "ROWS/S (5 S)", "IN FLIGHT",
                        "P50 MS (5 S)", "P99 MS (5 S)", "HEARTBEAT MS AGO",
                    ]
                ]
                    + self.replicas.map {
                        [
                            $0.replicaId, $0.group, $0.endpoint, $0.linkKinds, $0.precision, $0.state,
                            DecimalFormat.fixed($0.rowsPerSecond, 0), "\($0.inFlightRows)",
                            $0.isIdle ? "no calls" : DecimalFormat.fixed($0.latencyP50Ms, 2),
                            $0.isIdle ? "-" : DecimalFormat.fixed($0.latencyP99Ms, 2),
                            "\($0.lastHeartbeatMs)",
                        ]
                    })
        }
        if !self.prunedExperts.isEmpty {
            lines += ["", "pruned from routing: " + self.prunedExperts.joined(separator: ", ")]
        }
        let coactive = self.coactivation.filter { !$0.pairs.isEmpty }
        if !coactive.isEmpty {
            lines += ["", "experts chosen together (tokens in the window, top 5 pairs per layer):"]
            lines += coactive.map { layer in
                "  layer \(layer.layer): "
                    + layer.pairs.prefix(5).map { "\($0[0])+\($0[1]) ×\($0[2])" }.joined(separator: ", ")
                    + " of \(layer.tokens) tokens"
            }
        }
        if decisions > 0 && !self.decisions.isEmpty {
            lines.append("")
            lines.append("recent decisions:")
            lines += self.decisions.suffix(decisions).map {
                "  \(Self.clock($0.atUnixMs)) \($0.group): \($0.fromReplicas) → \($0.toReplicas) (\($0.reason))"
            }
        }
        return lines.joined(separator: "\n")
    }

    /// The heatmap for a terminal: one line per layer, one cell per expert, shaded by demand relative to the
    /// busiest expert (ANSI 256-colour backgrounds when `color`), the replica count inside, `·` for none, `x` pruned.
    public func heatmap(color: Bool) -> String {
        let layers = self.experts.reduce(into: [String]()) { if !$0.contains($1.layer) { $0.append($1.layer) } }
        let columns = self.experts.reduce(into: [String]()) { if !$0.contains($1.expert) { $0.append($1.expert) } }
        let peak = max(self.experts.map(\.demandRowsPerSecond).max() ?? 0, 1e-9)
        let shades = [236, 22, 28, 34, 70, 142, 178, 208, 202, 196]
        let width = max(2, columns.map(\.count).max() ?? 2)
        func pad(_ text: String) -> String { String(repeating: " ", count: max(0, width - text.count)) + text }
        let labelWidth = max(5, layers.map { $0.count + 6 }.max() ?? 5)
        var lines = [String(repeating: " ", count: labelWidth) + columns.map { " " + pad($0) + " " }.joined()]
        for layer in layers {
            var line = ("layer " + layer).padding(to: labelWidth)
            for column in columns {
                guard let cell = self.experts.first(where: { $0.layer == layer && $0.expert == column }) else {
                    line += String(repeating: " ", count: width + 2)
                    continue
                }
                let text = cell.pruned ? "x" : cell.servingReplicas == 0 ? "·" : String(cell.servingReplicas)
                if color {
                    let shade = shades[
                        min(shades.count - 1, Int(cell.demandRowsPerSecond / peak * Double(shades.count - 1) + 0.5))]
                    line += "\u{1B}[48;5;\(shade)m\u{1B}[97m " + pad(text) + " \u{1B}[0m"
                } else {
                    line += " " + pad(text) + " "
                }
            }
            lines.append(line)
        }
        lines.append(
            "cells: replicas serving the expert; shade: demand (busiest \(DecimalFormat.fixed(peak, 0)) rows/s)")
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

extension String {
    /// The string padded with spaces to `width` characters (unchanged if longer).
    func padding(to width: Int) -> String { self + String(repeating: " ", count: max(0, width - self.count)) }
}
