#include "quant_kernels.h"

#include <float.h>
#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MMQ_X86 1
#endif

// Tiles: 4 weight rows × 2 activation rows at a time (8 accumulators), so each weight vector is loaded and widened
// once per pair of activation rows, and each activation vector once per 4 weight rows.
enum { TILE_J = 4, TILE_R = 2 };

// ---- scalar -------------------------------------------------------------------------------------------------------

static inline float bf16_to_float(uint16_t bits) {
    uint32_t widened = (uint32_t)bits << 16;
    float value;
    memcpy(&value, &widened, sizeof value);
    return value;
}

static void bf16_scalar(const float *x, size_t m, const uint16_t *w, size_t n0, size_t n1, size_t k, float *y,
                        size_t ldy) {
    for (size_t j = n0; j < n1; j++) {
        const uint16_t *row = w + j * k;
        for (size_t r = 0; r < m; r++) {
            const float *xr = x + r * k;
            float sum = 0;
            for (size_t kk = 0; kk < k; kk++) sum += xr[kk] * bf16_to_float(row[kk]);
            y[r * ldy + j] = sum;
        }
    }
}

static void int8_scalar(const float *x, size_t m, const int8_t *q, const float *scales, size_t n0, size_t n1,
                        size_t k, float *y, size_t ldy) {
    for (size_t j = n0; j < n1; j++) {
        const int8_t *row = q + j * k;
        for (size_t r = 0; r < m; r++) {
            const float *xr = x + r * k;
            float sum = 0;
            for (size_t kk = 0; kk < k; kk++) sum += xr[kk] * (float)row[kk];
            y[r * ldy + j] = sum * scales[j];
        }
    }
}

#ifdef MMQ_X86

// ---- AVX2 + FMA ---------------------------------------------------------------------------------------------------

__attribute__((target("avx2,fma"))) static inline __m256 bf16x8(const uint16_t *p) {
    __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

__attribute__((target("avx2,fma"))) static inline __m256 int8x8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

__attribute__((target("avx2,fma"))) static inline float sum8(__m256 v) {
    __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    half = _mm_add_ps(half, _mm_movehl_ps(half, half));
    half = _mm_add_ss(half, _mm_movehdup_ps(half));
    return _mm_cvtss_f32(half);
}

// One tiled body for every instruction set and storage type: V is the vector type of LANES floats, with ZERO(),
// LOADU(p), FMA(a, b, c) and SUM(v) its operations; LOAD(p) widens LANES weights to f32, SCALAR_W one weight of the
// tail, SCALE(j) is row j's factor. Leaves j at the first weight row it did not do (the caller's scalar tail).
#define MMQ_TILED_BODY(V, LANES, ZERO, LOADU, FMA, SUM, WTYPE, LOAD, SCALAR_W, SCALE)                                 \
    size_t j = n0;                                                                                                    \
    const size_t kv = k - k % (LANES);                                                                                \
    for (; j + TILE_J <= n1; j += TILE_J) {                                                                           \
        const WTYPE *w0 = w + j * k, *w1 = w0 + k, *w2 = w1 + k, *w3 = w2 + k;                                        \
        for (size_t r = 0; r < m; r += TILE_R) {                                                                      \
            const int pair = r + 1 < m;                                                                               \
            const float *xa = x + r * k, *xb = pair ? xa + k : xa;                                                    \
            V a0 = ZERO(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;                             \
            for (size_t kk = 0; kk < kv; kk += (LANES)) {                                                             \
                V va = LOADU(xa + kk), vb = LOADU(xb + kk);                                                           \
                V v0 = LOAD(w0 + kk), v1 = LOAD(w1 + kk), v2 = LOAD(w2 + kk), v3 = LOAD(w3 + kk);                     \
                a0 = FMA(va, v0, a0), a1 = FMA(va, v1, a1), a2 = FMA(va, v2, a2), a3 = FMA(va, v3, a3);               \
                b0 = FMA(vb, v0, b0), b1 = FMA(vb, v1, b1), b2 = FMA(vb, v2, b2), b3 = FMA(vb, v3, b3);               \
            }                                                                                                         \
            float sa[4] = {SUM(a0), SUM(a1), SUM(a2), SUM(a3)}, sb[4] = {SUM(b0), SUM(b1), SUM(b2), SUM(b3)};         \
            const WTYPE *rows[4] = {w0, w1, w2, w3};                                                                  \
            for (size_t kk = kv; kk < k; kk++)                                                                        \
                for (int t = 0; t < 4; t++) {                                                                         \
                    sa[t] += xa[kk] * SCALAR_W(rows[t][kk]);                                                          \
                    sb[t] += xb[kk] * SCALAR_W(rows[t][kk]);                                                          \
                }                                                                                                     \
            for (int t = 0; t < 4; t++) {                                                                             \
                y[r * ldy + j + t] = sa[t] * SCALE(j + t);                                                            \
                if (pair) y[(r + 1) * ldy + j + t] = sb[t] * SCALE(j + t);                                            \
            }                                                                                                         \
        }                                                                                                             \
    }

#define MMQ_AVX2_BODY(WTYPE, LOAD, SCALAR_W, SCALE)                                                                   \
    MMQ_TILED_BODY(__m256, 8, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_fmadd_ps, sum8, WTYPE, LOAD, SCALAR_W, SCALE)

#define BF16_SCALE(j) 1.0f
#define INT8_SCALE(j) scales[j]
#define INT8_W(value) ((float)(value))

__attribute__((target("avx2,fma"))) static void bf16_avx2(const float *x, size_t m, const uint16_t *w, size_t n0,
                                                          size_t n1, size_t k, float *y, size_t ldy) {
    MMQ_AVX2_BODY(uint16_t, bf16x8, bf16_to_float, BF16_SCALE)
    bf16_scalar(x, m, w, j, n1, k, y, ldy);
}

__attribute__((target("avx2,fma"))) static void int8_avx2(const float *x, size_t m, const int8_t *q,
                                                          const float *scales, size_t n0, size_t n1, size_t k,
                                                          float *y, size_t ldy) {
    const int8_t *w = q;
    MMQ_AVX2_BODY(int8_t, int8x8, INT8_W, INT8_SCALE)
    int8_scalar(x, m, q, scales, j, n1, k, y, ldy);
}

// ---- AVX-512 F ----------------------------------------------------------------------------------------------------

__attribute__((target("avx512f"))) static inline __m512 bf16x16(const uint16_t *p) {
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

__attribute__((target("avx512f"))) static inline __m512 int8x16(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}

#define MMQ_AVX512_BODY(WTYPE, LOAD, SCALAR_W, SCALE)                                                                 \
    MMQ_TILED_BODY(__m512, 16, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_fmadd_ps, _mm512_reduce_add_ps, WTYPE, LOAD, \
                   SCALAR_W, SCALE)

__attribute__((target("avx512f"))) static void bf16_avx512(const float *x, size_t m, const uint16_t *w, size_t n0,
                                                            size_t n1, size_t k, float *y, size_t ldy) {
    MMQ_AVX512_BODY(uint16_t, bf16x16, bf16_to_float, BF16_SCALE)
    bf16_scalar(x, m, w, j, n1, k, y, ldy);
}

__attribute__((target("avx512f"))) static void int8_avx512(const float *x, size_t m, const int8_t *q,
                                                            const float *scales, size_t n0, size_t n1, size_t k,
                                                            float *y, size_t ldy) {
    const int8_t *w = q;
    MMQ_AVX512_BODY(int8_t, int8x16, INT8_W, INT8_SCALE)
    int8_scalar(x, m, q, scales, j, n1, k, y, ldy);
}

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

void mmq_bf16_matmul_t(int path, const float *x, size_t m, const uint16_t *w, size_t n0, size_t n1, size_t k,
                       float *y, size_t ldy) {
#ifdef MMQ_X86
    if (path == MMQ_PATH_AVX512 && mmq_path_supported(path)) return bf16_avx512(x, m, w, n0, n1, k, y, ldy);
    if (path == MMQ_PATH_AVX2 && mmq_path_supported(path)) return bf16_avx2(x, m, w, n0, n1, k, y, ldy);
#endif
    bf16_scalar(x, m, w, n0, n1, k, y, ldy);
}

void mmq_int8_matmul_t(int path, const float *x, size_t m, const int8_t *q, const float *scales, size_t n0,
                       size_t n1, size_t k, float *y, size_t ldy) {
#ifdef MMQ_X86
    if (path == MMQ_PATH_AVX512 && mmq_path_supported(path)) return int8_avx512(x, m, q, scales, n0, n1, k, y, ldy);
    if (path == MMQ_PATH_AVX2 && mmq_path_supported(path)) return int8_avx2(x, m, q, scales, n0, n1, k, y, ldy);
#endif
    int8_scalar(x, m, q, scales, n0, n1, k, y, ldy);
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
