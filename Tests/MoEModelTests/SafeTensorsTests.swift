import MoETestSupport
import MoECore
import Testing

@testable import MoEModel

@Suite("safetensors reader and writer")
struct SafeTensorsTests {
    @Test("written tensors read back with their dtype, shape and values")
    func roundTrip() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let f32 = try Tensor(shape: [2, 3], floats: [1, 2, 3, 4, 5, 6])
        let bf16 = try Tensor(shape: [3], floats: [0.5, -1, 2], dtype: .bf16)
        let f16 = try Tensor(shape: [1, 1, 2], floats: [0.25, 8], dtype: .f16)
        let path = directory.file("t.safetensors")
        try SafeTensorsWriter.write(
            [
                .init(name: "a", tensor: f32), .init(name: "b\"quoted\"", tensor: bf16), .init(name: "c", tensor: f16),
                .init(name: "ids", int32: [3, -1], shape: [2]),
            ],
            metadata: ["format": "pt"], to: path)
        let file = try SafeTensorsFile(path: path)
        #expect(file.metadata == ["format": "pt"])
        #expect(try file.tensor("a") == f32)
        #expect(try file.tensor("b\"quoted\"") == bf16)
        #expect(try file.tensor("c") == f16)
        #expect(try file.matrix("a") == Matrix(rows: 2, columns: 3, values: [1, 2, 3, 4, 5, 6]))
        #expect(file.entries["ids"]?.dtype == .i32)
        #expect(throws: ModelError.unsupportedTensorDType(name: "ids", dtype: "I32")) { try file.matrix("ids") }
        #expect(throws: ModelError.missingTensor(name: "zzz", folder: path)) { try file.tensor("zzz") }
    }

    /// A valid file with one F32 tensor "x" of shape [2], whose header is `header` (bytes after the length).
    static func file(header: String, declaredLength: UInt64? = nil, data: [UInt8] = [UInt8](repeating: 0, count: 8))
        -> [UInt8]
    {
        let headerBytes = Array(header.utf8)
        var bytes = [UInt8]()
        withUnsafeBytes(of: (declaredLength ?? UInt64(headerBytes.count)).littleEndian) { bytes.append(contentsOf: $0) }
        return bytes + headerBytes + data
    }

    struct Corruption: Sendable, CustomTestStringConvertible {
        let name: String
        let bytes: [UInt8]
        let reason: String
        var testDescription: String { self.name }

        init(name: String, _ bytes: [UInt8], _ reason: String) {
            self.name = name
            self.bytes = bytes
            self.reason = reason
        }
    }

    static let corruptions: [Corruption] = [
        Corruption(name: "empty file", [], "file is 0 bytes, shorter than the 8-byte header length"),
        Corruption(
            name: "header length past the end", file(header: "{}", declaredLength: 1 << 40),
            "header length 1099511627776 exceeds"),
        Corruption(
            name: "header not JSON", file(header: "not json at all"), "header does not start with a JSON object"),
        Corruption(name: "truncated JSON", file(header: "{\"x\":{\"dtype\":\"F32\""), "header is not valid JSON"),
        Corruption(
            name: "unknown dtype", file(header: #"{"x":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}"#),
            "unknown dtype 'F33'"),
        Corruption(
            name: "negative dimension", file(header: #"{"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#),
            "negative dimension"),
        Corruption(
            name: "offsets out of bounds", file(header: #"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,80]}}"#),
            "outside the 8-byte data buffer"),
        Corruption(
            name: "size does not match shape", file(header: #"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#),
            "needs 12 bytes, data_offsets give 8"),
        Corruption(
            name: "gap in the buffer", file(header: #"{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#),
            "gap in the data buffer"),
        Corruption(
            name: "overlapping tensors",
            file(
                header:
                    #"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
            ),
            "overlaps"),
        Corruption(
            name: "bytes left over", file(header: #"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#),
            "tensors cover 4"),
        Corruption(
            name: "offsets not a pair", file(header: #"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0]}}"#),
            "must be [begin, end]"),
    ]

    @Test("a corrupted file gets a clear error, never a crash", arguments: corruptions)
    func corrupted(corruption: Corruption) throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("bad.safetensors")
        try FileSystem.writeFile(path, chunks: [corruption.bytes])
        do {
            _ = try SafeTensorsFile(path: path)
            Issue.record("\(corruption.name): accepted")
        } catch {
            guard case .invalidSafeTensors(let errorPath, let reason) = error else {
                Issue.record("\(corruption.name): unexpected \(error)")
                return
            }
            #expect(errorPath == path)
            #expect(reason.contains(corruption.reason), "\(corruption.name): \(reason)")
        }
    }

    @Test("a valid minimal file is accepted")
    func minimalValid() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("ok.safetensors")
        var data = [UInt8]()
        for value: Float in [1.5, -2] {
            withUnsafeBytes(of: value.bitPattern.littleEndian) { data.append(contentsOf: $0) }
        }
        try FileSystem.writeFile(
            path, chunks: [Self.file(header: #"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: data)])
        #expect(try SafeTensorsFile(path: path).tensor("x").floats() == [1.5, -2])
    }
}
