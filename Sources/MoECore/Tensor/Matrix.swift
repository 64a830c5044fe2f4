/// A dense row-major f32 matrix `[rows, columns]`: the form every computation in MoEMesh works on.
public struct Matrix: Sendable, Equatable {
    public let rows: Int
    public let columns: Int
    /// `rows · columns` values; element (r, c) is `values[r · columns + c]`.
    public var values: [Float]

    public init(rows: Int, columns: Int, values: [Float]) {
        precondition(rows >= 0 && columns >= 0, "matrix dimensions must be non-negative")
        precondition(values.count == rows * columns, "matrix values: expected \(rows * columns), got \(values.count)")
        self.rows = rows
        self.columns = columns
        self.values = values
    }

    /// A matrix of zeros.
    public init(zeros rows: Int, _ columns: Int) {
        self.init(rows: rows, columns: columns, values: [Float](repeating: 0, count: rows * columns))
    }

    /// Row `r` as a slice of `values`.
    public func row(_ r: Int) -> ArraySlice<Float> {
        self.values[(r * self.columns)..<((r + 1) * self.columns)]
    }

    public subscript(row: Int, column: Int) -> Float {
        get { self.values[row * self.columns + column] }
        set { self.values[row * self.columns + column] = newValue }
    }

    /// `‖self − reference‖ / ‖reference‖` over all values (Frobenius norms); NaN when the shapes differ.
    public func relativeError(to reference: Matrix) -> Double {
        guard self.rows == reference.rows, self.columns == reference.columns else { return .nan }
        var difference = 0.0, norm = 0.0
        for (x, y) in zip(self.values, reference.values) {
            difference += Double(x - y) * Double(x - y)
            norm += Double(y) * Double(y)
        }
        return (difference / max(norm, .leastNormalMagnitude)).squareRoot()
    }
}
