#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
import MoECore

/// A safetensors header, strictly validated.
///
/// Layout: `u64 N` (little-endian), `N` bytes of JSON header, then the data buffer. The header maps tensor names
/// to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the data buffer), plus an optional
/// `__metadata__` string map. Validation follows the format's rules: offsets in bounds, `end − begin` equal to
/// `product(shape) · width`, and the tensors tiling the data buffer without gaps or overlaps.
public struct SafeTensorsHeader: Sendable {
    /// Largest header accepted (the reference implementation's limit).
    public static let maximumHeaderLength = 100_000_000

    public let entries: [String: SafeTensorsFile.Entry]
    public let metadata: [String: String]
    /// Byte offset of the data buffer in the file: `8 + N`.
    public let dataStart: Int

    /// Parses and validates the header of a whole file's `bytes` (`path` only names it in errors).
    public init(parsing bytes: UnsafeRawBufferPointer, path: String) throws(ModelError) {
        func invalid(_ reason: String) -> ModelError { .invalidSafeTensors(path: path, reason: reason) }

        guard bytes.count >= 8 else {
            throw invalid("file is \(bytes.count) bytes, shorter than the 8-byte header length")
        }
        let declared = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
        guard declared <= UInt64(min(Self.maximumHeaderLength, bytes.count - 8)) else {
            throw invalid(
                "header length \(declared) exceeds the \(bytes.count - 8) bytes after it"
                    + (declared > UInt64(Self.maximumHeaderLength) ? " (limit \(Self.maximumHeaderLength))" : ""))
        }
        let headerLength = Int(declared)
        guard headerLength >= 2, bytes[8] == UInt8(ascii: "{") else {
            throw invalid("header does not start with a JSON object")
        }
        self.dataStart = 8 + headerLength
        let dataLength = bytes.count - self.dataStart
        let header: RawHeader
        do {
            let json = Data(bytes[8..<(8 + headerLength)])
            header = try JSONDecoder().decode(RawHeader.self, from: json)
        } catch {
            throw invalid("header is not valid JSON of the safetensors form (\(Self.summary(of: error)))")
        }

        var entries: [String: SafeTensorsFile.Entry] = [:]
        for (name, raw) in header.tensors {
            guard let dtype = SafeTensorsDType(rawValue: raw.dtype) else {
                throw invalid("tensor '\(name)' has unknown dtype '\(raw.dtype)'")
            }
            let count: Int
            do { count = try Tensor.elementCount(of: raw.shape) } catch {
                throw invalid("tensor '\(name)': \(error)")
            }
            guard raw.dataOffsets.count == 2 else {
                throw invalid("tensor '\(name)': data_offsets must be [begin, end], got \(raw.dataOffsets)")
            }
            let (begin, end) = (raw.dataOffsets[0], raw.dataOffsets[1])
            guard begin >= 0, begin <= end, end <= dataLength else {
                throw invalid(
                    "tensor '\(name)': data_offsets [\(begin), \(end)] outside the \(dataLength)-byte data buffer")
            }
            let (expected, overflow) = count.multipliedReportingOverflow(by: dtype.byteWidth)
            guard !overflow, end - begin == expected else {
                throw invalid(
                    "tensor '\(name)': \(dtype.rawValue) \(raw.shape) needs \(expected) bytes, data_offsets give \(end - begin)"
                )
            }
            entries[name] = SafeTensorsFile.Entry(name: name, dtype: dtype, shape: raw.shape, dataRange: begin..<end)
        }
        // The tensors must tile the data buffer exactly.
        var position = 0
        for entry in entries.values.sorted(by: {
            ($0.dataRange.lowerBound, $0.dataRange.upperBound) < ($1.dataRange.lowerBound, $1.dataRange.upperBound)
        }) {
            guard entry.dataRange.lowerBound == position else {
                throw invalid(
                    entry.dataRange.lowerBound < position
                        ? "tensor '\(entry.name)' overlaps the tensor before it at byte \(entry.dataRange.lowerBound)"
                        : "gap in the data buffer before tensor '\(entry.name)' (bytes \(position)..<\(entry.dataRange.lowerBound))"
                )
            }
            position = entry.dataRange.upperBound
        }
        guard position == dataLength else {
            throw invalid("data buffer is \(dataLength) bytes but the tensors cover \(position)")
        }
        self.entries = entries
        self.metadata = header.metadata
    }

    private static func summary(of error: any Error) -> String {
        if let decoding = error as? DecodingError {
            switch decoding {
            case .dataCorrupted(let context): return context.debugDescription
            case .keyNotFound(let key, let context):
                return "missing '\(key.stringValue)' at \(context.codingPath.map(\.stringValue).joined(separator: "."))"
            case .typeMismatch(_, let context), .valueNotFound(_, let context):
                return "\(context.debugDescription) at \(context.codingPath.map(\.stringValue).joined(separator: "."))"
            @unknown default: return "\(decoding)"
            }
        }
        return "\(error)"
    }
}

/// The header as JSON: tensor entries plus `__metadata__`.
private struct RawHeader: Decodable {
    struct RawEntry: Decodable {
        let dtype: String
        let shape: [Int]
        let dataOffsets: [Int]
        enum CodingKeys: String, CodingKey {
            case dtype, shape
            case dataOffsets = "data_offsets"
        }
    }

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    var tensors: [String: RawEntry] = [:]
    var metadata: [String: String] = [:]

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Key.self)
        for key in container.allKeys {
            if key.stringValue == "__metadata__" {
                self.metadata = try container.decode([String: String].self, forKey: key)
            } else {
                self.tensors[key.stringValue] = try container.decode(RawEntry.self, forKey: key)
            }
        }
    }
}
