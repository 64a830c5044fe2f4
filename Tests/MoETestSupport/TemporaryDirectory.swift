#if canImport(Glibc)
    import Glibc
#endif

/// A fresh directory under /tmp, removed by `remove()`.
public struct TemporaryDirectory: Sendable {
    public let path: String

    public init() {
        var template = Array("/tmp/moemesh-test-XXXXXX".utf8CString)
        let result = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(result != nil, "mkdtemp failed")
        self.path = String(cString: template)
    }

    public func file(_ name: String) -> String { self.path + "/" + name }

    public func remove() {
        _ = system("rm -rf '\(self.path)'")
    }
}

import MoECore
import MoEModel

/// A small synthetic Mixtral model in a temporary folder.
public struct SmallModel: Sendable {
    public let directory: TemporaryDirectory
    public let shape: ModelSynthesizer.Shape
    public var path: String { self.directory.path }

    public init(
        shape: ModelSynthesizer.Shape = .init(experts: 4, topK: 2, hiddenSize: 32, intermediateSize: 48, layers: 2),
        dtype: DType = .f32, seed: UInt64 = 1
    ) throws {
        self.directory = TemporaryDirectory()
        self.shape = shape
        try ModelSynthesizer(shape: shape, dtype: dtype, seed: seed).write(to: self.directory.path)
    }

    /// `tokens` random rows of width H.
    public func randomHidden(tokens: Int, seed: UInt64 = 7) -> Matrix {
        Matrix(
            rows: tokens, columns: self.shape.hiddenSize,
            values: ModelSynthesizer.uniform(count: tokens * self.shape.hiddenSize, scale: 1.7, seed: seed))
    }

    public func remove() { self.directory.remove() }
}

/// max |a − b| / max(1e-30, max |b|).
public func relativeError(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count, "relativeError: \(a.count) vs \(b.count) values")
    let scale = max(1e-30, b.map { Double(abs($0)) }.max() ?? 0)
    return zip(a, b).map { Double(abs($0 - $1)) }.max().map { $0 / scale } ?? 0
}
