#if canImport(Glibc)
import Glibc
#endif

/// Latencies of repeated calls, in microseconds.
public struct LatencySamples: Sendable {
    public private(set) var microseconds: [Double] = []

    public init() {}

    public mutating func append(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self.microseconds.append(Double(seconds) * 1e6 + Double(attoseconds) / 1e12)
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

/// CPU time (user + system) a process has used, from /proc/PID/stat.
public enum ProcessCPU {
    public static func seconds(of pid: Int32) -> Double {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let descriptor = open("/proc/\(pid)/stat", O_RDONLY)
        guard descriptor >= 0 else { return 0 }
        defer { close(descriptor) }
        let count = read(descriptor, &buffer, buffer.count)
        guard count > 0 else { return 0 }
        let text = String(decoding: buffer[0..<count], as: UTF8.self)
        guard let close = text.lastIndex(of: ")") else { return 0 }
        // After the command: state(0) ppid(1) ... utime(11) stime(12).
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// Formats numbers without Foundation.
enum Format {
    /// `value` with `decimals` digits after the point.
    static func fixed(_ value: Double, _ decimals: Int = 1) -> String {
        guard value.isFinite else { return "\(value)" }
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let scaled = (abs(value) * scale).rounded()
        let whole = Int(scaled / scale)
        var text = (value < 0 && scaled > 0 ? "-" : "") + String(whole)
        if decimals > 0 {
            let fraction = String(Int(scaled) - whole * Int(scale))
            text += "." + String(repeating: "0", count: decimals - fraction.count) + fraction
        }
        return text
    }

    /// Right-aligned in `width` columns.
    static func pad(_ text: String, _ width: Int) -> String {
        String(repeating: " ", count: max(0, width - text.count)) + text
    }
}
