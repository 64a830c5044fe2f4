import CCUDA
import CQuantKernels
import MoECore
import MoEKernels

/// One projection's weights `W [rows, columns]` on a CUDA device, and the product `Y [n, rows] = X [n, columns] · Wᵀ`
/// over them (X bf16 on the device; Y bf16 or f32): bf16 values for cuBLASLt, or block-quantised int8/e4m3 bytes with
/// their f32 scales (`BlockQuantizedWeights`' layout) for `quantized_matmul` and `dequantize_to_bf16`.
final class DeviceWeights: @unchecked Sendable {
    /// The precisions a CUDA device holds weights in.
    static let precisions: [WeightPrecision] = [.bf16, .int8, .fp8]

    let device: CUDADevice
    let rows: Int
    let columns: Int
    let precision: WeightPrecision
    /// bf16 `[rows, columns]`, or one byte a weight.
    let values: DeviceMemory
    /// nil for bf16.
    let scales: DeviceMemory?
    let blockRows: Int
    let blockColumns: Int

    /// Bytes of device memory held, scales included.
    var bytes: Int { self.values.bytes + (self.scales?.bytes ?? 0) }

    private var scaleColumns: Int { (self.columns + self.blockColumns - 1) / self.blockColumns }

    /// The rows of `matrices` one after another (e.g. gate then up), in `precision` (bf16, int8 or fp8).
    /// - Throws: `WeightPrecisionError` for f32 or non-finite weights in int8/fp8, `CUDAError` from the device.
    init(_ matrices: [Matrix], precision: WeightPrecision, device: CUDADevice) throws {
        self.device = device
        self.rows = matrices.reduce(0) { $0 + $1.rows }
        self.columns = matrices.first?.columns ?? 0
        self.precision = precision
        switch precision {
        case .bf16:
            self.values = try Self.uploadBF16(matrices, device: device)
            self.scales = nil
            (self.blockRows, self.blockColumns) = (1, max(1, self.columns))
        case .int8, .fp8:
            let quantized = try BlockQuantizedWeights(stacking: matrices, precision: precision)
            let values = try device.allocate(bytes: quantized.values.count)
            try quantized.values.withUnsafeBufferPointer { (bytes) throws(CUDAError) in try values.upload(bytes) }
            self.values = values
            let scales = try device.allocate(bytes: quantized.scales.count * 4)
            try quantized.scales.withUnsafeBufferPointer { (values) throws(CUDAError) in try scales.upload(values) }
            self.scales = scales
            (self.blockRows, self.blockColumns) = (quantized.blockRows, quantized.blockColumns)
        case .f32:
            throw WeightPrecisionError.unsupportedOnDevice(.f32, device: "CUDA", supported: Self.precisions)
        }
    }

    /// Random weights generated on the device (benchmarks): bf16 uniform in `±1/√columns`; int8 and fp8 random bytes
    /// with per-output-channel scales that give weights of about that size.
    init(random precision: WeightPrecision, rows: Int, columns: Int, seed: UInt64, device: CUDADevice) throws {
        self.device = device
        self.rows = rows
        self.columns = columns
        self.precision = precision
        (self.blockRows, self.blockColumns) = (1, columns)
        let magnitude = 1 / Float(columns).squareRoot()
        switch precision {
        case .bf16:
            self.values = try device.allocate(bytes: rows * columns * 2)
            self.scales = nil
            try device.withLane { (lane) throws(CUDAError) in
                try device.launch(
                    device.kernels.fillUniformBF16, count: rows * columns, stream: lane.stream,
                    [.pointer(self.values.address), .int64(Int64(rows * columns)), .uint64(seed), .float(magnitude)])
                try lane.synchronize()
            }
        case .int8, .fp8:
            self.values = try device.allocate(bytes: rows * columns)
            // Random int8 levels reach 127, random e4m3 bytes 448.
            let scale = magnitude / (precision == .int8 ? 127 : 448)
            let scales = try device.allocate(bytes: rows * 4)
            try [Float](repeating: scale, count: rows).withUnsafeBufferPointer { (values) throws(CUDAError) in
                try scales.upload(values)
            }
            self.scales = scales
            let format = BlockQuantizedWeights.Format(precision)!
            try device.withLane { (lane) throws(CUDAError) in
                try device.launch(
                    device.kernels.fillRandomBytes, count: rows * columns, stream: lane.stream,
                    [
                        .pointer(self.values.address), .int64(Int64(rows * columns)), .uint64(seed),
                        .int32(format.rawValue),
                    ])
                try lane.synchronize()
            }
        case .f32:
            throw WeightPrecisionError.unsupportedOnDevice(.f32, device: "CUDA", supported: Self.precisions)
        }
    }

    /// Queues `output [n, rows] = input [n, columns] · Wᵀ` on `lane` (input bf16; output f32 when `outputF32`, else
    /// bf16). Quantised weights: `quantized_matmul` up to `CUDAExpertKernel.directTokenLimit` rows, else a bf16 copy
    /// in the lane's `.dequantized` buffer multiplied by cuBLASLt.
    func multiply(
        _ input: CUdeviceptr, rows n: Int, into output: CUdeviceptr, outputF32: Bool, lane: CUDALane
    ) throws(CUDAError) {
        let device = self.device
        let outputType = Int32(outputF32 ? CCUDA_R_32F : CCUDA_R_16BF)
        guard let scales = self.scales else {
            return try lane.matmul(
                weights: self.values.address, input: input, output: output, m: self.rows, n: n, k: self.columns,
                outputType: outputType)
        }
        let layout: [KernelArgument] = [
            .pointer(self.values.address), .pointer(scales.address),
            .int32(BlockQuantizedWeights.Format(self.precision)!.rawValue),
            .int32(Int32(self.blockRows)), .int32(Int32(self.blockColumns)), .int32(Int32(self.scaleColumns)),
        ]
        if n <= CUDAExpertKernel.directTokenLimit {
            try device.launch(
                device.kernels.quantizedMatmul, count: self.rows * 32, stream: lane.stream,
                layout + [
                    .pointer(input), .int32(Int32(n)), .int32(Int32(self.rows)), .int32(Int32(self.columns)),
                    .pointer(output), .int32(outputF32 ? 1 : 0),
                ])
            return
        }
        let widened = try lane.buffer(.dequantized, bytes: self.rows * self.columns * 2)
        try device.launch(
            device.kernels.dequantizeToBF16, count: self.rows * self.columns / 4, stream: lane.stream,
            layout + [.pointer(widened), .int32(Int32(self.rows)), .int32(Int32(self.columns))])
        try lane.matmul(
            weights: widened, input: input, output: output, m: self.rows, n: n, k: self.columns, outputType: outputType)
    }

    /// Concatenates the matrices' rows, rounds to bf16 (`mmq_bf16_quantize`) and copies them to a new device buffer.
    private static func uploadBF16(_ matrices: [Matrix], device: CUDADevice) throws(CUDAError) -> DeviceMemory {
        let count = matrices.reduce(0) { $0 + $1.values.count }
        let memory = try device.allocate(bytes: count * 2)
        // In chunks, so that a Mixtral-size projection never needs a second full-size host copy.
        let chunk = 1 << 22
        var bits = [UInt16](repeating: 0, count: min(chunk, max(1, count)))
        var offset = 0
        for matrix in matrices {
            var start = 0
            while start < matrix.values.count {
                let end = min(start + chunk, matrix.values.count)
                matrix.values.withUnsafeBufferPointer { values in
                    bits.withUnsafeMutableBufferPointer {
                        mmq_bf16_quantize(values.baseAddress! + start, end - start, $0.baseAddress!)
                    }
                }
                try bits.withUnsafeBufferPointer { (values) throws(CUDAError) in
                    try memory.upload(UnsafeBufferPointer(rebasing: values[0..<(end - start)]), at: offset + start * 2)
                }
                start = end
            }
            offset += matrix.values.count * 2
        }
        return memory
    }
}
