#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// `model.safetensors.index.json`: which shard holds each tensor. Shard names must be plain file names inside the
/// model folder (no `/`, not `.` or `..`), so an index cannot point the loader at files elsewhere.
public struct SafeTensorsIndex: Sendable, Equatable {
    /// Tensor name → shard file name.
    public let weightMap: [String: String]

    /// Parses the index file's `bytes` (`path` only names it in errors).
    public init(parsing bytes: [UInt8], path: String) throws(ModelError) {
        let decoded: Decoded
        do { decoded = try JSONDecoder().decode(Decoded.self, from: Data(bytes)) } catch {
            throw .invalidConfig(path: path, reason: "expected a JSON object with a 'weight_map' of tensor → file")
        }
        for (tensor, file) in decoded.weightMap where !Self.isPlainFileName(file) {
            throw .invalidConfig(
                path: path,
                reason:
                    "'weight_map' puts tensor '\(tensor)' in '\(file)'; expected a file name inside the model folder")
        }
        self.weightMap = decoded.weightMap
    }

    static func isPlainFileName(_ name: String) -> Bool {
        !name.isEmpty && name != "." && name != ".." && !name.contains("/") && !name.contains("\0")
    }

    private struct Decoded: Decodable {
        let weightMap: [String: String]
        enum CodingKeys: String, CodingKey { case weightMap = "weight_map" }
    }
}
