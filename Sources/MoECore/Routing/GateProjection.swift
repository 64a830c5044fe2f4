/// The router's projection `L = X · Wᵀ` (`X: [T, H]`, `W: [E, H]` → `L: [T, E]`, f32), computed so that a token's
/// logits are bitwise the same whether it comes alone or in a batch of any size, in any process, on any CPU (IEEE-754
/// single precision, round to nearest), whatever BLAS library or kernel set the process loaded.
///
/// A BLAS `sgemm` chooses its blocking (and so the order of its additions) from the matrix shape and the CPU's kernel
/// set: the same row rounds differently inside a batch of 32 than alone, or under `SkylakeX` and `Haswell` kernels.
/// Here the order depends on `H` alone: for each `(t, e)`,
///
///     acc_j = Σ_{c = 0, 1, …} x[t, 16c + j] · w[e, 16c + j]      (j = 0…15, in increasing c; each step a rounded
///                                                                   multiply, then a rounded add; no FMA)
///     L[t, e]: the 16 lanes summed by a fixed tree: a_j = acc_j + acc_{j+8} (j < 8), b_j = a_j + a_{j+4} (j < 4),
///              c_j = b_j + b_{j+2} (j < 2), L = c_0 + c_1
///
/// (the last chunk of a row zero-padded). 16 lanes are explicit SIMD values, so the compiler cannot reorder them
/// (Swift never contracts or reassociates floating-point operations).
public enum GateProjection {
    /// Lanes per chunk of a row.
    public static let lanes = 16

    /// `L = X · Wᵀ`, `[T, E]`.
    public static func logits(_ hidden: Matrix, _ weight: Matrix) -> Matrix {
        precondition(
            hidden.columns == weight.columns,
            "gate projection: hidden size \(hidden.columns) and weight columns \(weight.columns) differ")
        let tokens = hidden.rows, experts = weight.rows, width = hidden.columns
        let values = [Float](unsafeUninitializedCapacity: tokens * experts) { output, initialized in
            hidden.values.withUnsafeBufferPointer { x in
                weight.values.withUnsafeBufferPointer { w in
                    for token in 0..<tokens {
                        let row = x.baseAddress! + token * width
                        for expert in 0..<experts {
                            output[token * experts + expert] = Self.dot(
                                row, w.baseAddress! + expert * width, count: width)
                        }
                    }
                }
            }
            initialized = tokens * experts
        }
        return Matrix(rows: tokens, columns: experts, values: values)
    }

    /// `Σ_h a[h] · b[h]` in the fixed order above.
    @inlinable
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var accumulator = SIMD16<Float>(repeating: 0)
        let whole = count / 16 * 16
        var index = 0
        while index < whole {
            let x = UnsafeRawPointer(a + index).loadUnaligned(as: SIMD16<Float>.self)
            let y = UnsafeRawPointer(b + index).loadUnaligned(as: SIMD16<Float>.self)
            accumulator = accumulator + x * y
            index += 16
        }
        if whole < count {
            var x = SIMD16<Float>(repeating: 0), y = SIMD16<Float>(repeating: 0)
            for lane in 0..<(count - whole) {
                x[lane] = a[whole + lane]
                y[lane] = b[whole + lane]
            }
            accumulator = accumulator + x * y
        }
        let eight = accumulator.lowHalf + accumulator.highHalf
        let four = eight.lowHalf + eight.highHalf
        let two = four.lowHalf + four.highHalf
        return two[0] + two[1]
    }
}
