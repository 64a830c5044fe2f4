/// The one line a service prints on standard output once it serves: `<role> listening on HOST:PORT`.
/// A parent process (`moemesh up`, tests) waits for it to learn the port (`ReadyLine.print` writes and flushes it).
public enum ReadyLine {
    public static func text(role: String, endpoint: ServiceEndpoint) -> String { "\(role) listening on \(endpoint)" }

    /// The role a ready line announces, or nil if `line` is not one.
    public static func role(of line: String) -> String? {
        guard let range = line.firstRange(of: " listening on "), range.lowerBound != line.startIndex else { return nil }
        return String(line[..<range.lowerBound])
    }

    /// The endpoint in a ready line of `role`, or nil if `line` is not one.
    public static func parse(_ line: String, role: String) -> ServiceEndpoint? {
        let prefix = "\(role) listening on "
        guard line.hasPrefix(prefix) else { return nil }
        return ServiceEndpoint(String(line.dropFirst(prefix.count)).trimmingSuffixWhitespace())
    }
}

extension String {
    fileprivate func trimmingSuffixWhitespace() -> String {
        var result = self
        while let last = result.last, last.isWhitespace { result.removeLast() }
        return result
    }
}
