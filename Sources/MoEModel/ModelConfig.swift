#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// A Hugging Face `config.json`: typed access to its keys, with errors that name the file, the key, what was
/// expected and what came. Architectures read the keys they need.
public struct ModelConfig: Sendable, Equatable {
    public let path: String
    public let values: [String: JSONValue]

    public init(path: String, values: [String: JSONValue]) {
        self.path = path
        self.values = values
    }

    /// Reads and parses `config.json`.
    public static func load(path: String) throws(ModelError) -> ModelConfig {
        try ModelConfig(parsing: try FileSystem.readFile(path), path: path)
    }

    /// Parses the bytes of a `config.json` (`path` only names it in errors).
    public init(parsing bytes: [UInt8], path: String) throws(ModelError) {
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(bytes)), case .object(let values) = value
        else { throw .invalidConfig(path: path, reason: "not a JSON object") }
        self.init(path: path, values: values)
    }

    public var modelType: String {
        get throws(ModelError) { try self.string("model_type") }
    }

    private func invalid(_ key: String, expected: String, got value: JSONValue) -> ModelError {
        .invalidConfig(path: self.path, reason: "'\(key)' must be \(expected), got \(value.kind)")
    }

    public func contains(_ key: String) -> Bool { self.values[key] != nil && self.values[key] != .null }

    /// An integer key (nil when absent or null).
    public func optionalInt(_ key: String) throws(ModelError) -> Int? {
        guard let value = self.values[key], value != .null else { return nil }
        guard case .number(let number) = value, number == number.rounded(), abs(number) < 1e15 else {
            throw self.invalid(key, expected: "an integer", got: value)
        }
        return Int(number)
    }

    public func int(_ key: String, default fallback: Int? = nil) throws(ModelError) -> Int {
        if let value = try self.optionalInt(key) { return value }
        guard let fallback else { throw .invalidConfig(path: self.path, reason: "required key '\(key)' is missing") }
        return fallback
    }

    /// A positive integer key, at most `limit` (sizes that allocate: a hostile config must not ask for 10¹² layers).
    public func positiveInt(_ key: String, default fallback: Int? = nil, atMost limit: Int = Self.largestSize)
        throws(ModelError) -> Int
    {
        try self.count(key, default: fallback, in: 1...limit)
    }

    /// An integer key within `range`.
    public func count(_ key: String, default fallback: Int? = nil, in range: ClosedRange<Int>) throws(ModelError) -> Int
    {
        let value = try self.int(key, default: fallback)
        guard range.contains(value) else {
            throw .invalidConfig(
                path: self.path,
                reason:
                    "'\(key)' must be \(range.lowerBound == 1 ? "positive" : "at least \(range.lowerBound)") and at most \(range.upperBound), got \(value)"
            )
        }
        return value
    }

    /// Bounds of what a config may ask for: a dimension (hidden or intermediate size), layers, experts per layer.
    /// Far above any published MoE model (DeepSeek-V3: H = 7168, 61 layers, 256 experts; Switch-c: 2048 experts).
    public static let largestSize = 1 << 24
    public static let mostLayers = 1 << 12
    public static let mostExperts = 1 << 16

    public func double(_ key: String, default fallback: Double? = nil) throws(ModelError) -> Double {
        guard let value = self.values[key], value != .null else {
            guard let fallback else {
                throw .invalidConfig(path: self.path, reason: "required key '\(key)' is missing")
            }
            return fallback
        }
        guard case .number(let number) = value else { throw self.invalid(key, expected: "a number", got: value) }
        return number
    }

    public func bool(_ key: String, default fallback: Bool) throws(ModelError) -> Bool {
        guard let value = self.values[key], value != .null else { return fallback }
        guard case .bool(let flag) = value else { throw self.invalid(key, expected: "true or false", got: value) }
        return flag
    }

    public func string(_ key: String, default fallback: String? = nil) throws(ModelError) -> String {
        guard let value = self.values[key], value != .null else {
            guard let fallback else {
                throw .invalidConfig(path: self.path, reason: "required key '\(key)' is missing")
            }
            return fallback
        }
        guard case .string(let text) = value else { throw self.invalid(key, expected: "a string", got: value) }
        return text
    }

    public func intArray(_ key: String, default fallback: [Int] = []) throws(ModelError) -> [Int] {
        guard let value = self.values[key], value != .null else { return fallback }
        guard case .array(let items) = value else {
            throw self.invalid(key, expected: "an array of integers", got: value)
        }
        var result: [Int] = []
        for (position, item) in items.enumerated() {
            // Int(exactly:) refuses what an Int cannot hold (found by fuzzing: 1.8e49 in mlp_only_layers trapped).
            guard case .number(let number) = item, let integer = Int(exactly: number) else {
                throw .invalidConfig(
                    path: self.path,
                    reason: "'\(key)' must be an array of integers, got \(item.text) at position \(position)")
            }
            result.append(integer)
        }
        return result
    }

    /// `config.json` text of `values`, pretty-printed with sorted keys.
    public static func json(_ values: [String: JSONValue]) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return Array((try? encoder.encode(JSONValue.object(values))) ?? Data())
    }
}
