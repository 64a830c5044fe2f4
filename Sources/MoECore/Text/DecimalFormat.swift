/// Numbers as text without Foundation (whose formatting APIs would pull ICU into a static binary).
public enum DecimalFormat {
    /// `value` with `decimals` digits after the point, rounded half away from zero: `fixed(3.14159, 2) == "3.14"`.
    public static func fixed(_ value: Double, _ decimals: Int = 1) -> String {
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

    /// A duration in milliseconds with two decimals: `"12.34"`.
    public static func milliseconds(_ duration: Duration) -> String {
        self.fixed(duration.milliseconds, 2)
    }
}
