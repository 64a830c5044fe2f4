#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
import MoECore

/// A safetensors file, memory-mapped, with a strictly validated header (`SafeTensorsHeader`).
public struct SafeTensorsFile: Sendable {
    /// One tensor's entry in the header.
    public struct Entry: Sendable, Equatable {
        public let name: String
        public let dtype: SafeTensorsDType
        public let shape: [Int]
        /// Byte range inside the data buffer.
        public let dataRange: Range<Int>
    }

    public let path: String
    public let entries: [String: Entry]
    public let metadata: [String: String]
    private let file: MappedFile
    private let dataStart: Int

    public init(path: String) throws(ModelError) {
        let file = try MappedFile(path: path)
        let header = try SafeTensorsHeader(parsing: file.bytes, path: path)
        self.path = path
        self.file = file
        self.dataStart = header.dataStart
        self.entries = header.entries
        self.metadata = header.metadata
    }

    /// The raw little-endian bytes of a tensor (a view into the mapping).
    public func bytes(of entry: Entry) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(
            rebasing: self.file.bytes[
                (self.dataStart + entry.dataRange.lowerBound)..<(self.dataStart + entry.dataRange.upperBound)])
    }

    /// A floating-point tensor widened to f32 as a `[rows, columns]` matrix (`[n]` gives `[1, n]`).
    public func matrix(_ name: String) throws(ModelError) -> Matrix {
        guard let entry = self.entries[name] else { throw .missingTensor(name: name, folder: self.path) }
        guard let dtype = entry.dtype.floatingPoint else {
            throw .unsupportedTensorDType(name: name, dtype: entry.dtype.rawValue)
        }
        let columns = entry.shape.last ?? 1
        let count = entry.shape.reduce(1, *)
        let rows = columns == 0 ? 0 : count / columns
        return Matrix(rows: rows, columns: columns, values: dtype.decodeFloats(self.bytes(of: entry)))
    }

    /// A floating-point tensor with its storage dtype kept.
    public func tensor(_ name: String) throws(ModelError) -> Tensor {
        guard let entry = self.entries[name] else { throw .missingTensor(name: name, folder: self.path) }
        guard let dtype = entry.dtype.floatingPoint else {
            throw .unsupportedTensorDType(name: name, dtype: entry.dtype.rawValue)
        }
        do { return try Tensor(dtype: dtype, shape: entry.shape, bytes: self.bytes(of: entry)) } catch {
            throw .invalidSafeTensors(path: self.path, reason: "tensor '\(name)': \(error)")
        }
    }
}
