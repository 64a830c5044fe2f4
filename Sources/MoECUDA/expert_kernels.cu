// MoEMesh's CUDA kernels: bf16 conversion, the FFN activations, bias, and the products over weight-only int8/fp8
// weights. Compiled at run time with NVRTC (no headers: bf16 and e4m3 are handled as their bit patterns), loaded
// with cuModuleLoadData. The bf16 GEMMs are cuBLASLt's. Tests/CUDAEmulation runs these kernels on the CPU.
// scripts/generate-cuda-source.sh embeds this file in CUDAKernelSource.swift; run it after editing.
//
// Layouts are row-major. A gated FFN's first GEMM writes A [rows, 2·width] (gate columns, then up columns);
// the activation writes Z [rows, width].

typedef unsigned short bf16;

__device__ __forceinline__ float bf16_to_float(bf16 x) { return __uint_as_float(((unsigned int)x) << 16); }

// Round to nearest even; NaN stays NaN.
__device__ __forceinline__ bf16 float_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16)(u >> 16);
}

// Activation codes, as MoEKernels' CUDAActivationCode: 0 relu, 1 gelu (erf), 2 gelu (tanh), 3 silu.
__device__ __forceinline__ float activate(float z, int code) {
    switch (code) {
    case 0: return fmaxf(z, 0.0f);
    case 1: return 0.5f * z * (1.0f + erff(z * 0.70710678118654752f));
    case 2: return 0.5f * z * (1.0f + tanhf(0.79788456080286536f * (z + 0.044715f * z * z * z)));
    default: return z / (1.0f + expf(-z));
    }
}

#define GRID_STRIDE(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

// out[i] = bf16(in[i]), 4 values per step when n is a multiple of 4 (pointers are 256-byte aligned).
extern "C" __global__ void f32_to_bf16(const float *in, bf16 *out, long long n) {
    if ((n & 3) == 0) {
        const float4 *in4 = (const float4 *)in;
        uint2 *out4 = (uint2 *)out;
        GRID_STRIDE(i, n >> 2) {
            float4 v = in4[i];
            uint2 packed;
            packed.x = (unsigned int)float_to_bf16(v.x) | ((unsigned int)float_to_bf16(v.y) << 16);
            packed.y = (unsigned int)float_to_bf16(v.z) | ((unsigned int)float_to_bf16(v.w) << 16);
            out4[i] = packed;
        }
        return;
    }
    GRID_STRIDE(i, n) out[i] = float_to_bf16(in[i]);
}

// out[i] = float(in[i]) (the grouped step's second GEMM writes bf16).
extern "C" __global__ void bf16_to_f32(const bf16 *in, float *out, long long n) {
    GRID_STRIDE(i, n) out[i] = bf16_to_float(in[i]);
}

// z[r, c] = act(a[r, c]) · a[r, width + c]. Eight columns per step when width is a multiple of 8.
extern "C" __global__ void gated_activation(const bf16 *a, bf16 *z, int rows, int width, int code) {
    if ((width & 7) == 0) {
        long long groups = (long long)rows * (width >> 3);
        int groupsPerRow = width >> 3;
        GRID_STRIDE(g, groups) {
            long long r = g / groupsPerRow, c8 = g % groupsPerRow;
            const uint4 gate = ((const uint4 *)(a + r * 2 * width))[c8];
            const uint4 up = ((const uint4 *)(a + r * 2 * width + width))[c8];
            const bf16 *gv = (const bf16 *)&gate, *uv = (const bf16 *)&up;
            uint4 result;
            bf16 *out = (bf16 *)&result;
#pragma unroll
            for (int k = 0; k < 8; k++) out[k] = float_to_bf16(activate(bf16_to_float(gv[k]), code) * bf16_to_float(uv[k]));
            ((uint4 *)(z + r * width))[c8] = result;
        }
        return;
    }
    GRID_STRIDE(i, (long long)rows * width) {
        long long r = i / width, c = i % width;
        float gate = bf16_to_float(a[r * 2 * width + c]), up = bf16_to_float(a[r * 2 * width + width + c]);
        z[i] = float_to_bf16(activate(gate, code) * up);
    }
}

// GPT-OSS: g = min(a_gate + b_gate, limit), u = clamp(a_up + b_up, −limit, limit), z = (u + 1) · g · σ(α g).
// bias: [2·width] f32, gate biases then up biases.
extern "C" __global__ void clamped_swiglu(
    const bf16 *a, const float *bias, bf16 *z, int rows, int width, float limit, float alpha) {
    GRID_STRIDE(i, (long long)rows * width) {
        long long r = i / width, c = i % width;
        float gate = fminf(bf16_to_float(a[r * 2 * width + c]) + bias[c], limit);
        float up = fminf(fmaxf(bf16_to_float(a[r * 2 * width + width + c]) + bias[width + c], -limit), limit);
        z[i] = float_to_bf16((up + 1.0f) * (gate / (1.0f + expf(-alpha * gate))));
    }
}

// z[i] = act(z[i]) (plain FFNs).
extern "C" __global__ void activation_in_place(bf16 *z, long long n, int code) {
    GRID_STRIDE(i, n) z[i] = float_to_bf16(activate(bf16_to_float(z[i]), code));
}

// y[r, c] += bias[c].
extern "C" __global__ void add_bias(float *y, const float *bias, int rows, int width) {
    GRID_STRIDE(i, (long long)rows * width) y[i] += bias[i % width];
}

// out[i] = bf16(scale · u), u uniform in [−1, 1) from a hash of (seed, i): random weights for benchmarks.
extern "C" __global__ void fill_uniform_bf16(bf16 *out, long long n, unsigned long long seed, float scale) {
    GRID_STRIDE(i, n) {
        unsigned long long x = seed + (unsigned long long)i * 0x9E3779B97F4A7C15ull;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
        x ^= x >> 31;
        float u = (float)(x >> 40) * (1.0f / 8388608.0f) - 1.0f;
        out[i] = float_to_bf16(scale * u);
    }
}

// Weight-only quantised weights `W [rows, k]`, row-major, one byte a weight: `W[r, c] = q[r, c] · scale(r, c)`,
// `scale(r, c) = scales[(r / blockRows) · scaleColumns + c / blockColumns]` (per output channel: blockRows = 1,
// blockColumns = k). q is int8 (format 0) or e4m3fn (format 1: s.eeee.mmm, bias 7, no infinities; the quantiser
// never writes the NaN codes).
#define FORMAT_INT8 0
#define FORMAT_E4M3 1

// e4m3 → f32 exactly: the byte's exponent and mantissa placed in an f32 (subnormals included) times 2^120.
__device__ __forceinline__ float e4m3_to_float(unsigned int bits) {
    return __uint_as_float(((bits & 0x80u) << 24) | ((bits & 0x7fu) << 20)) * __uint_as_float(0x7b800000u);
}

__device__ __forceinline__ float dequantize_byte(unsigned int bits, int format) {
    return format == FORMAT_INT8 ? (float)(signed char)bits : e4m3_to_float(bits);
}

__device__ __forceinline__ float weight_scale(
    const float *scales, long long r, int c, int blockRows, int blockColumns, int scaleColumns) {
    return scales[(r / blockRows) * scaleColumns + c / blockColumns];
}

// Most token rows one pass of `quantized_matmul` keeps accumulators for; more rows take further passes.
#define QUANT_TOKEN_TILE 8

// y [n, rows] = x [n, k] · Wᵀ (x bf16; y f32 when outputF32, else bf16), for few token rows (decode): one warp per
// weight row, each lane reading 16 weights at a time (one 16-byte load) when k and blockColumns are multiples of 16,
// one at a time otherwise; fp32 accumulation, summed over the warp with shuffles. Launch with rows · 32 threads (a
// multiple of 32 per block).
//
// Expected speed: each weight byte is read once per pass of up to QUANT_TOKEN_TILE token rows, so at 1–8 rows the
// kernel is bound by memory bandwidth. A Mixtral-size expert (H = 4096, I = 14336: 176 MB in int8/fp8, beyond the
// 50 MB L2) should stream its weights at ≥ 50% of the memory's peak at T = 1: ≥ 1.7 TB/s on an H100 SXM (HBM3,
// 3.35 TB/s), ≥ 2.4 TB/s on an H200 (HBM3e, 4.8 TB/s); bf16 weights through cuBLASLt likewise. Every warp keeps
// 32 × 16 B in flight per iteration; 132 SMs × up to 64 warps give the ~4 MB in flight that hide HBM's latency at
// these rates. Unmeasured until a GPU runs scripts/gpu-verify.sh, whose `kernels bench --expect-decode-fraction
// 0.5` fails below it.
extern "C" __global__ void quantized_matmul(
    const unsigned char *w, const float *scales, int format, int blockRows, int blockColumns, int scaleColumns,
    const bf16 *x, int n, int rows, int k, void *y, int outputF32) {
    const int lane = threadIdx.x & 31;
    const long long firstWarp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const long long warps = ((long long)gridDim.x * blockDim.x) >> 5;
    const bool vectorised = (k & 15) == 0 && (blockColumns & 15) == 0;
    for (long long r = firstWarp; r < rows; r += warps) {
        const unsigned char *row = w + r * k;
        for (int t0 = 0; t0 < n; t0 += QUANT_TOKEN_TILE) {
            const int tokens = min(QUANT_TOKEN_TILE, n - t0);
            const bf16 *xs = x + (long long)t0 * k;
            float acc[QUANT_TOKEN_TILE];
#pragma unroll
            for (int t = 0; t < QUANT_TOKEN_TILE; t++) acc[t] = 0.0f;
            if (vectorised) {
                for (int c = lane * 16; c < k; c += 32 * 16) {
                    const uint4 packed = *(const uint4 *)(row + c);
                    const unsigned int words[4] = {packed.x, packed.y, packed.z, packed.w};
                    float wv[16];
#pragma unroll
                    for (int j = 0; j < 16; j++) {
                        wv[j] = dequantize_byte((words[j >> 2] >> (8 * (j & 3))) & 0xffu, format);
                    }
                    const float scale = weight_scale(scales, r, c, blockRows, blockColumns, scaleColumns);
#pragma unroll
                    for (int t = 0; t < QUANT_TOKEN_TILE; t++) {
                        if (t < tokens) {
                            const uint4 *xv = (const uint4 *)(xs + (long long)t * k + c);
                            const uint4 low = xv[0], high = xv[1];
                            const unsigned int xw[8] = {low.x, low.y, low.z, low.w, high.x, high.y, high.z, high.w};
                            float partial = 0.0f;
#pragma unroll
                            for (int j = 0; j < 8; j++) {
                                partial = fmaf(wv[2 * j], __uint_as_float(xw[j] << 16), partial);
                                partial = fmaf(wv[2 * j + 1], __uint_as_float(xw[j] & 0xffff0000u), partial);
                            }
                            acc[t] = fmaf(scale, partial, acc[t]);
                        }
                    }
                }
            } else {
                for (int c = lane; c < k; c += 32) {
                    const float weight = dequantize_byte(row[c], format)
                        * weight_scale(scales, r, c, blockRows, blockColumns, scaleColumns);
#pragma unroll
                    for (int t = 0; t < QUANT_TOKEN_TILE; t++) {
                        if (t < tokens) acc[t] = fmaf(weight, bf16_to_float(xs[(long long)t * k + c]), acc[t]);
                    }
                }
            }
#pragma unroll
            for (int t = 0; t < QUANT_TOKEN_TILE; t++) {
                if (t < tokens) {
                    float sum = acc[t];
#pragma unroll
                    for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
                    if (lane == 0) {
                        const long long at = (long long)(t0 + t) * rows + r;
                        if (outputF32) ((float *)y)[at] = sum;
                        else ((bf16 *)y)[at] = float_to_bf16(sum);
                    }
                }
            }
        }
    }
}

// out [rows, k] = bf16(W) (prefill: the bf16 copy cuBLASLt then multiplies), four weights a step when k is a multiple
// of 4.
extern "C" __global__ void dequantize_to_bf16(
    const unsigned char *w, const float *scales, int format, int blockRows, int blockColumns, int scaleColumns,
    bf16 *out, int rows, int k) {
    if ((k & 3) == 0) {
        const int quadsPerRow = k >> 2;
        GRID_STRIDE(g, (long long)rows * quadsPerRow) {
            const long long r = g / quadsPerRow;
            const int c = (int)(g % quadsPerRow) * 4;
            const unsigned int packed = ((const unsigned int *)w)[g];
            uint2 result;
            unsigned int halves[4];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const float scale = weight_scale(scales, r, c + j, blockRows, blockColumns, scaleColumns);
                halves[j] = float_to_bf16(dequantize_byte((packed >> (8 * j)) & 0xffu, format) * scale);
            }
            result.x = halves[0] | (halves[1] << 16);
            result.y = halves[2] | (halves[3] << 16);
            ((uint2 *)out)[g] = result;
        }
        return;
    }
    GRID_STRIDE(i, (long long)rows * k) {
        const long long r = i / k;
        const int c = (int)(i % k);
        out[i] = float_to_bf16(
            dequantize_byte(w[i], format) * weight_scale(scales, r, c, blockRows, blockColumns, scaleColumns));
    }
}

// out[i] = a random byte from a hash of (seed, i), e4m3's NaN codes (0x7f, 0xff) moved to 0x7e/0xfe: random
// quantised weights for benchmarks.
extern "C" __global__ void fill_random_bytes(unsigned char *out, long long n, unsigned long long seed, int format) {
    GRID_STRIDE(i, n) {
        unsigned long long x = seed + (unsigned long long)i * 0x9E3779B97F4A7C15ull;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
        x ^= x >> 31;
        unsigned int byte = (unsigned int)(x >> 56);
        if (format == FORMAT_E4M3 && (byte & 0x7fu) == 0x7fu) byte -= 1;
        out[i] = (unsigned char)byte;
    }
}
