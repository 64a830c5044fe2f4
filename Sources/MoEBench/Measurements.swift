import MoECore
import MoEServing

/// Latencies of repeated calls, in microseconds.
public struct LatencySamples: Sendable {
    public private(set) var microseconds: [Double] = []

    public init() {}

    public mutating func append(_ duration: Duration) {
        self.microseconds.append(duration.seconds * 1e6)
    }

    public mutating func append(contentsOf other: LatencySamples) { self.microseconds += other.microseconds }

    public var count: Int { self.microseconds.count }

    /// The q-quantile (nearest rank), 0 when empty.
    public func quantile(_ q: Double) -> Double {
        guard !self.microseconds.isEmpty else { return 0 }
        let sorted = self.microseconds.sorted()
        return sorted[min(sorted.count - 1, max(0, Int((q * Double(sorted.count)).rounded(.up)) - 1))]
    }

    public var p50: Double { self.quantile(0.5) }
    public var p99: Double { self.quantile(0.99) }
    public var total: Double { self.microseconds.reduce(0, +) }
}

/// Table cells.
enum Format {
    static func fixed(_ value: Double, _ decimals: Int = 1) -> String { DecimalFormat.fixed(value, decimals) }

    /// Right-aligned in `width` columns.
    static func pad(_ text: String, _ width: Int) -> String {
        String(repeating: " ", count: max(0, width - text.count)) + text
    }
}
