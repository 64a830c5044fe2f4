#include "quant_kernels.h"

#include <float.h>
#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MMQ_X86 1
#endif

// ---- widening one weight -----------------------------------------------------------------------------------------

static inline float bf16_to_float(uint16_t bits) {
    uint32_t widened = (uint32_t)bits << 16;
    float value;
    memcpy(&value, &widened, sizeof value);
    return value;
}

#define F32_WIDEN(value) (value)
#define INT8_WIDEN(value) ((float)(value))

// ---- portable C (the compiler may still vectorise it for the baseline ISA) -----------------------------------------

static inline float scalar_fma(float a, float b, float c) { return a * b + c; }

#define MMQ_TARGET
#define MMQ_V float
#define MMQ_LANES 1
#define MMQ_ZERO() 0.0f
#define MMQ_LOADX(p) (*(p))
#define MMQ_FMA scalar_fma
#define MMQ_SUM(v) (v)
#define MMQ_ROWS 4

#define MMQ_FN f32_scalar
#define MMQ_W float
#define MMQ_LOADW(p) (*(p))
#define MMQ_WIDEN F32_WIDEN
#include "matmul_tiled.h"

#define MMQ_FN bf16_scalar
#define MMQ_W uint16_t
#define MMQ_LOADW(p) bf16_to_float(*(p))
#define MMQ_WIDEN bf16_to_float
#include "matmul_tiled.h"

#define MMQ_FN int8_scalar
#define MMQ_W int8_t
#define MMQ_LOADW(p) ((float)*(p))
#define MMQ_WIDEN INT8_WIDEN
#include "matmul_tiled.h"

#undef MMQ_TARGET
#undef MMQ_V
#undef MMQ_LANES
#undef MMQ_ZERO
#undef MMQ_LOADX
#undef MMQ_FMA
#undef MMQ_SUM
#undef MMQ_ROWS

#ifdef MMQ_X86

// ---- AVX2 + FMA: 8 lanes, 16 registers (8 accumulators, 4 weight vectors, 1 activation vector) --------------------

#define AVX2 __attribute__((target("avx2,fma")))

AVX2 static inline __m256 bf16x8(const uint16_t *p) {
    __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

AVX2 static inline __m256 int8x8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

AVX2 static inline float sum8(__m256 v) {
    __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    half = _mm_add_ps(half, _mm_movehl_ps(half, half));
    half = _mm_add_ss(half, _mm_movehdup_ps(half));
    return _mm_cvtss_f32(half);
}

#define MMQ_TARGET AVX2
#define MMQ_V __m256
#define MMQ_LANES 8
#define MMQ_ZERO _mm256_setzero_ps
#define MMQ_LOADX _mm256_loadu_ps
#define MMQ_FMA _mm256_fmadd_ps
#define MMQ_SUM sum8
#define MMQ_ROWS 2

#define MMQ_FN f32_avx2
#define MMQ_W float
#define MMQ_LOADW _mm256_loadu_ps
#define MMQ_WIDEN F32_WIDEN
#include "matmul_tiled.h"

#define MMQ_FN bf16_avx2
#define MMQ_W uint16_t
#define MMQ_LOADW bf16x8
#define MMQ_WIDEN bf16_to_float
#include "matmul_tiled.h"

#define MMQ_FN int8_avx2
#define MMQ_W int8_t
#define MMQ_LOADW int8x8
#define MMQ_WIDEN INT8_WIDEN
#include "matmul_tiled.h"

#undef MMQ_TARGET
#undef MMQ_V
#undef MMQ_LANES
#undef MMQ_ZERO
#undef MMQ_LOADX
#undef MMQ_FMA
#undef MMQ_SUM
#undef MMQ_ROWS

// ---- AVX-512 F: 16 lanes, 32 registers (16 accumulators, 4 weight vectors, 1 activation vector) -------------------

#define AVX512 __attribute__((target("avx512f")))

AVX512 static inline __m512 bf16x16(const uint16_t *p) {
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

AVX512 static inline __m512 int8x16(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}

#define MMQ_TARGET AVX512
#define MMQ_V __m512
#define MMQ_LANES 16
#define MMQ_ZERO _mm512_setzero_ps
#define MMQ_LOADX _mm512_loadu_ps
#define MMQ_FMA _mm512_fmadd_ps
#define MMQ_SUM _mm512_reduce_add_ps
#define MMQ_ROWS 4

#define MMQ_FN f32_avx512
#define MMQ_W float
#define MMQ_LOADW _mm512_loadu_ps
#define MMQ_WIDEN F32_WIDEN
#include "matmul_tiled.h"

#define MMQ_FN bf16_avx512
#define MMQ_W uint16_t
#define MMQ_LOADW bf16x16
#define MMQ_WIDEN bf16_to_float
#include "matmul_tiled.h"

#define MMQ_FN int8_avx512
#define MMQ_W int8_t
#define MMQ_LOADW int8x16
#define MMQ_WIDEN INT8_WIDEN
#include "matmul_tiled.h"

#endif  // MMQ_X86

// ---- dispatch -----------------------------------------------------------------------------------------------------

int mmq_path_supported(int path) {
    switch (path) {
    case MMQ_PATH_SCALAR: return 1;
#ifdef MMQ_X86
    case MMQ_PATH_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case MMQ_PATH_AVX512: return __builtin_cpu_supports("avx512f");
#endif
    default: return 0;
    }
}

int mmq_best_path(void) {
    if (mmq_path_supported(MMQ_PATH_AVX512)) return MMQ_PATH_AVX512;
    if (mmq_path_supported(MMQ_PATH_AVX2)) return MMQ_PATH_AVX2;
    return MMQ_PATH_SCALAR;
}

const char *mmq_path_name(int path) {
    switch (path) {
    case MMQ_PATH_AVX2: return "avx2";
    case MMQ_PATH_AVX512: return "avx512";
    default: return "scalar";
    }
}

// Every product goes through here: the widest supported path not wider than `path`.
#ifdef MMQ_X86
#define MMQ_DISPATCH(TYPE, ...)                                                                                       \
    do {                                                                                                              \
        if (path == MMQ_PATH_AVX512 && mmq_path_supported(path)) return TYPE##_avx512(__VA_ARGS__);                   \
        if (path == MMQ_PATH_AVX2 && mmq_path_supported(path)) return TYPE##_avx2(__VA_ARGS__);                       \
        TYPE##_scalar(__VA_ARGS__);                                                                                   \
    } while (0)
#else
#define MMQ_DISPATCH(TYPE, ...) TYPE##_scalar(__VA_ARGS__)
#endif

void mmq_f32_matmul_t(int path, const float *x, size_t m, const float *w, size_t n0, size_t n1, size_t k, float *y,
                      size_t ldy) {
    MMQ_DISPATCH(f32, x, m, w, NULL, n0, n1, k, y, ldy);
}

void mmq_bf16_matmul_t(int path, const float *x, size_t m, const uint16_t *w, size_t n0, size_t n1, size_t k,
                       float *y, size_t ldy) {
    MMQ_DISPATCH(bf16, x, m, w, NULL, n0, n1, k, y, ldy);
}

void mmq_int8_matmul_t(int path, const float *x, size_t m, const int8_t *q, const float *scales, size_t n0,
                       size_t n1, size_t k, float *y, size_t ldy) {
    MMQ_DISPATCH(int8, x, m, q, scales, n0, n1, k, y, ldy);
}

// ---- conversions --------------------------------------------------------------------------------------------------

void mmq_bf16_dequantize(const uint16_t *w, size_t count, float *out) {
    for (size_t i = 0; i < count; i++) out[i] = bf16_to_float(w[i]);
}

void mmq_int8_dequantize(const int8_t *q, const float *scales, size_t rows, size_t k, float *out) {
    for (size_t j = 0; j < rows; j++) {
        const float scale = scales[j];
        for (size_t kk = 0; kk < k; kk++) out[j * k + kk] = (float)q[j * k + kk] * scale;
    }
}

size_t mmq_int8_quantize(const float *w, size_t rows, size_t k, int8_t *q, float *scales) {
    size_t nonFinite = 0;
    for (size_t j = 0; j < rows; j++) {
        const float *row = w + j * k;
        int8_t *out = q + j * k;
        // Branch-free passes, so that the compiler vectorises them for the baseline ISA.
        float largest = 0;
        size_t bad = 0;
        for (size_t kk = 0; kk < k; kk++) {
            const float magnitude = fabsf(row[kk]);
            const int finite = magnitude <= FLT_MAX;  // false for ±inf and NaN
            bad += !finite;
            largest = fmaxf(largest, finite ? magnitude : 0.0f);
        }
        nonFinite += bad;
        const float scale = largest / 127.0f;
        scales[j] = scale;
        // Levels: w / scale rounded half to even by adding and subtracting 1.5 · 2^23 (exact for |x| < 2^22, and
        // |w / scale| ≤ 127 here); a zero row, and non-finite values, give 0.
        const float magic = 12582912.0f;
        for (size_t kk = 0; kk < k; kk++) {
            const float value = row[kk];
            const float level = scale > 0 && fabsf(value) <= FLT_MAX ? (value / scale + magic) - magic : 0.0f;
            out[kk] = (int8_t)fminf(127.0f, fmaxf(-127.0f, level));
        }
    }
    return nonFinite;
}

uint8_t mmq_e4m3_from_float(float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    const uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    u &= 0x7fffffffu;
    float magnitude;
    memcpy(&magnitude, &u, 4);
    // Below 2^-6 the codes are the multiples of 2^-9 in order (8 · 2^-9 = 2^-6 is code 8, the first normal one).
    if (magnitude < 0.015625f) return sign | (uint8_t)rintf(magnitude * 512.0f);
    // Round the f32 mantissa to 3 bits, half to even; a carry moves into the exponent, as it should.
    u += 0x7ffffu + ((u >> 20) & 1u);
    uint32_t code = ((((u >> 23) - 127u + 7u) & 0xffu) << 3) | ((u >> 20) & 7u);
    if ((u >> 23) > 127u + 8u || code > 0x7eu) code = 0x7eu;  // above 448 (or its rounding): saturate
    return sign | (uint8_t)code;
}

float mmq_e4m3_to_float(uint8_t bits) {
    const float sign = (bits & 0x80u) ? -1.0f : 1.0f;
    const int exponent = (bits >> 3) & 0xf, mantissa = bits & 7;
    if (exponent == 0xf && mantissa == 7) return NAN;
    if (exponent == 0) return sign * ldexpf((float)mantissa, -9);
    return sign * ldexpf(1.0f + (float)mantissa / 8.0f, exponent - 7);
}

size_t mmq_e4m3_quantize(const float *w, size_t rows, size_t k, size_t block_rows, size_t block_columns, uint8_t *q,
                         float *scales) {
    size_t nonFinite = 0;
    const size_t scale_columns = (k + block_columns - 1) / block_columns;
    for (size_t r0 = 0; r0 < rows; r0 += block_rows) {
        const size_t r1 = r0 + block_rows < rows ? r0 + block_rows : rows;
        for (size_t c0 = 0; c0 < k; c0 += block_columns) {
            const size_t c1 = c0 + block_columns < k ? c0 + block_columns : k;
            float largest = 0;
            for (size_t r = r0; r < r1; r++) {
                for (size_t c = c0; c < c1; c++) {
                    const float magnitude = fabsf(w[r * k + c]);
                    if (magnitude <= FLT_MAX) {
                        largest = fmaxf(largest, magnitude);
                    } else {
                        nonFinite++;
                    }
                }
            }
            const float scale = largest / 448.0f;
            scales[(r0 / block_rows) * scale_columns + c0 / block_columns] = scale;
            for (size_t r = r0; r < r1; r++) {
                for (size_t c = c0; c < c1; c++) {
                    const float value = w[r * k + c];
                    q[r * k + c] = scale > 0 && fabsf(value) <= FLT_MAX ? mmq_e4m3_from_float(value / scale) : 0;
                }
            }
        }
    }
    return nonFinite;
}

void mmq_bf16_quantize(const float *w, size_t count, uint16_t *out) {
    for (size_t i = 0; i < count; i++) {
        uint32_t bits;
        memcpy(&bits, &w[i], sizeof bits);
        if (isnan(w[i])) {
            out[i] = (uint16_t)(bits >> 16) | 0x0040;
            continue;
        }
        bits += 0x7FFF + ((bits >> 16) & 1);
        out[i] = (uint16_t)(bits >> 16);
    }
}
