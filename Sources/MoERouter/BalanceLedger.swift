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

    /// The aggregate of a layer, or of every layer that has seen traffic.
    public func snapshot() -> [String: BalanceStats] { self.layers.withLock { $0 } }
}
