import MoECore
import Synchronization

/// Balance telemetry aggregated over every request, per layer: what the coordinator and metrics read.
public final class BalanceLedger: Sendable {
    private let layers: Mutex<[String: BalanceStats]>

    public init() { self.layers = Mutex([:]) }

    public func record(layer: String, _ stats: BalanceStats) {
        self.layers.withLock { layers in
            if layers[layer] == nil { layers[layer] = BalanceStats(numExperts: stats.numExperts) }
            layers[layer]!.merge(stats)
        }
    }

    /// The aggregate of every layer that has seen traffic since the window began; `reset` starts a new window
    /// for `layers` (all when nil).
    public func snapshot(reset: Bool = false, layers names: Set<String>? = nil) -> [String: BalanceStats] {
        self.layers.withLock { layers in
            let snapshot = layers
            if reset {
                for name in layers.keys where names?.contains(name) ?? true { layers[name] = nil }
            }
            return snapshot
        }
    }
}
