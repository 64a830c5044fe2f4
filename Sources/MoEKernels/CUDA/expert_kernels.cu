// MoEMesh's CUDA kernels: bf16 conversion, the FFN activations, bias. Compiled at run time with NVRTC (no headers:
// bf16 is handled as its bit pattern), loaded with cuModuleLoadData. The GEMMs are cuBLASLt's.
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
