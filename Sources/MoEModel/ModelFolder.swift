#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
import MoECore

/// A Hugging Face model folder: `config.json` plus `model.safetensors`, or shards listed by
/// `model.safetensors.index.json`, or any `*.safetensors` files. All files are memory-mapped.
public struct ModelFolder: Sendable {
    public let path: String
    public let config: ModelConfig
    /// File name → file.
    private let files: [String: SafeTensorsFile]
    /// Tensor name → file name.
    private let tensorFiles: [String: String]

    public init(path: String) throws(ModelError) {
        guard FileSystem.isDirectory(path) else { throw .notAModelFolder(path: path, reason: "no such directory") }
        let configPath = FileSystem.join(path, "config.json")
        guard FileSystem.fileExists(configPath) else {
            throw .notAModelFolder(path: path, reason: "config.json is missing")
        }
        self.path = path
        self.config = try ModelConfig.load(path: configPath)
        _ = try self.config.modelType

        let indexPath = FileSystem.join(path, "model.safetensors.index.json")
        var files: [String: SafeTensorsFile] = [:]
        var tensorFiles: [String: String] = [:]
        if FileSystem.fileExists(indexPath) {
            let weightMap = try SafeTensorsIndex(parsing: try FileSystem.readFile(indexPath), path: indexPath).weightMap
            for fileName in Set(weightMap.values).sorted() {
                files[fileName] = try SafeTensorsFile(path: FileSystem.join(path, fileName))
            }
            for (tensor, fileName) in weightMap {
                guard files[fileName]!.entries[tensor] != nil else {
                    throw .invalidSafeTensors(
                        path: FileSystem.join(path, fileName),
                        reason: "the index lists tensor '\(tensor)' in this file, but the file does not hold it")
                }
                tensorFiles[tensor] = fileName
            }
        } else {
            let names = try FileSystem.contentsOfDirectory(path).filter { $0.hasSuffix(".safetensors") }
            guard !names.isEmpty else { throw .notAModelFolder(path: path, reason: "no *.safetensors file") }
            for fileName in names {
                let file = try SafeTensorsFile(path: FileSystem.join(path, fileName))
                files[fileName] = file
                for tensor in file.entries.keys {
                    if let other = tensorFiles[tensor] {
                        throw .duplicateTensor(name: tensor, files: [other, fileName])
                    }
                    tensorFiles[tensor] = fileName
                }
            }
        }
        self.files = files
        self.tensorFiles = tensorFiles
    }

    /// Names of every tensor in the folder.
    public var tensorNames: [String] { self.tensorFiles.keys.sorted() }

    public func contains(_ tensor: String) -> Bool { self.tensorFiles[tensor] != nil }

    /// A floating-point tensor as an f32 matrix, checking its shape. An `F8_E4M3` matrix is read with its block
    /// scales `{name}_scale_inv` (see `BlockScaledFP8`).
    public func matrix(_ name: String, shape: [Int]) throws(ModelError) -> Matrix {
        let file = try self.file(holding: name)
        let entry = file.entries[name]!
        guard entry.shape == shape else { throw .tensorShape(name: name, expected: shape, got: entry.shape) }
        if entry.dtype == .f8e4m3 && shape.count == 2 { return try self.blockScaledFP8(name, file: file, shape: shape) }
        return try file.matrix(name)
    }

    /// An fp8 matrix `[R, C]` widened with its block scales.
    private func blockScaledFP8(_ name: String, file: SafeTensorsFile, shape: [Int]) throws(ModelError) -> Matrix {
        let scaleName = name + "_scale_inv"
        guard self.contains(scaleName) else {
            throw .missingBlockScales(name: name, scales: scaleName, folder: self.path)
        }
        let block = try BlockScaledFP8.blockSize(self.config)
        let (rows, columns) = (shape[0], shape[1])
        let scaleShape = [(rows + block.rows - 1) / block.rows, (columns + block.columns - 1) / block.columns]
        let scales = try self.matrix(scaleName, shape: scaleShape)
        let values = BlockScaledFP8.dequantize(
            file.bytes(of: file.entries[name]!), rows: rows, columns: columns, scales: scales, block: block)
        return Matrix(rows: rows, columns: columns, values: values)
    }

    /// A 1-D floating-point tensor of `count` values, widened to f32.
    public func vector(_ name: String, count: Int) throws(ModelError) -> [Float] {
        try self.matrix(name, shape: [count]).values
    }

    /// Whether a tensor exists with exactly this shape (for optional tensors).
    public func shape(of name: String) -> [Int]? {
        guard let fileName = self.tensorFiles[name] else { return nil }
        return self.files[fileName]?.entries[name]?.shape
    }

    /// Slice `index` of the leading dimension of a tensor shaped `[n] + shape`, widened to f32 as a matrix
    /// `[shape[0], shape[1]]` (or `[1, shape[0]]` for a 1-D slice). Only that slice's bytes are read.
    public func slice(_ name: String, index: Int, count: Int, shape: [Int]) throws(ModelError) -> Matrix {
        let file = try self.file(holding: name)
        let entry = file.entries[name]!
        guard entry.shape == [count] + shape else {
            throw .tensorShape(name: name, expected: [count] + shape, got: entry.shape)
        }
        guard let dtype = entry.dtype.floatingPoint else {
            throw .unsupportedTensorDType(name: name, dtype: entry.dtype.rawValue)
        }
        let elements = shape.reduce(1, *)
        let bytes = file.bytes(of: entry)
        let start = index * elements * dtype.byteWidth
        let view = UnsafeRawBufferPointer(rebasing: bytes[start..<(start + elements * dtype.byteWidth)])
        let rows = shape.count == 2 ? shape[0] : 1
        return Matrix(rows: rows, columns: elements / max(rows, 1), values: dtype.decodeFloats(view))
    }

    /// A floating-point tensor, storage dtype kept.
    public func tensor(_ name: String) throws(ModelError) -> Tensor {
        try self.file(holding: name).tensor(name)
    }

    private func file(holding name: String) throws(ModelError) -> SafeTensorsFile {
        guard let fileName = self.tensorFiles[name], let file = self.files[fileName] else {
            throw .missingTensor(name: name, folder: self.path)
        }
        return file
    }
}
