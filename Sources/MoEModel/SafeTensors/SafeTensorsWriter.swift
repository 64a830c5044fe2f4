import MoECore

/// Writes safetensors files: header JSON padded with spaces to a multiple of 8 bytes, then the tensors in order.
public enum SafeTensorsWriter {
    /// One tensor to write: raw little-endian bytes of `dtype` and `shape`.
    public struct Entry: Sendable {
        public let name: String
        public let dtype: SafeTensorsDType
        public let shape: [Int]
        public let bytes: [UInt8]

        public init(name: String, dtype: SafeTensorsDType, shape: [Int], bytes: [UInt8]) {
            precondition(
                bytes.count == shape.reduce(1, *) * dtype.byteWidth, "\(name): byte count does not match shape")
            self.name = name
            self.dtype = dtype
            self.shape = shape
            self.bytes = bytes
        }

        public init(name: String, tensor: Tensor) {
            self.init(name: name, dtype: SafeTensorsDType(tensor.dtype), shape: tensor.shape, bytes: tensor.bytes())
        }

        /// An int32 tensor (e.g. expert ids).
        public init(name: String, int32 values: [Int32], shape: [Int]) {
            var bytes = [UInt8]()
            bytes.reserveCapacity(values.count * 4)
            for value in values {
                withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
            }
            self.init(name: name, dtype: .i32, shape: shape, bytes: bytes)
        }
    }

    /// The file's bytes, as chunks: the header, then each tensor.
    public static func serialize(_ entries: [Entry], metadata: [String: String] = [:]) -> [[UInt8]] {
        var header = "{"
        var fields: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            fields.append("\"__metadata__\":{\(pairs.joined(separator: ","))}")
        }
        var offset = 0
        for entry in entries {
            let shape = entry.shape.map(String.init).joined(separator: ",")
            fields.append(
                "\(jsonString(entry.name)):{\"dtype\":\"\(entry.dtype.rawValue)\",\"shape\":[\(shape)],"
                    + "\"data_offsets\":[\(offset),\(offset + entry.bytes.count)]}")
            offset += entry.bytes.count
        }
        header += fields.joined(separator: ",") + "}"
        var headerBytes = Array(header.utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(UInt8(ascii: " ")) }
        var length = [UInt8]()
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { length.append(contentsOf: $0) }
        return [length + headerBytes] + entries.map(\.bytes)
    }

    public static func write(_ entries: [Entry], metadata: [String: String] = [:], to path: String) throws(ModelError) {
        try FileSystem.writeFile(path, chunks: serialize(entries, metadata: metadata))
    }

    /// A JSON string literal.
    static func jsonString(_ value: String) -> String {
        var result = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    result.unicodeScalars.append(scalar)
                }
            }
        }
        return result + "\""
    }
}
