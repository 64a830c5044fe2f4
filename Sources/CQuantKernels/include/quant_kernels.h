#ifndef MOEMESH_QUANT_KERNELS_H
#define MOEMESH_QUANT_KERNELS_H
// Weight-only quantised matrix products on the CPU: `Y[m, j] = Σ_k X[m, k] · W[j, k]` for weight rows j in
// [n0, n1), with W stored as bf16 (widened in registers) or int8 with one f32 scale per row (`W[j, k] = q[j, k] ·
// scale[j]`). Activations and accumulation stay f32. One function per storage type; `path` picks the instruction
// set (see `mmq_best_path`), so tests can run every path this CPU has against the same reference.
#include <stddef.h>
#include <stdint.h>

enum {
    MMQ_PATH_SCALAR = 0,  // portable C (the compiler may still vectorise it for the baseline ISA)
    MMQ_PATH_AVX2 = 1,    // AVX2 + FMA, 8 lanes
    MMQ_PATH_AVX512 = 2,  // AVX-512 F, 16 lanes
};

/// The widest path this CPU runs (x86: AVX-512 F, else AVX2 + FMA, else scalar; other CPUs: scalar).
int mmq_best_path(void);
/// Whether this CPU can run `path`.
int mmq_path_supported(int path);
/// "avx512", "avx2" or "scalar".
const char *mmq_path_name(int path);

/// `y[r * ldy + j] = Σ_k x[r * k + kk] · w[j * k + kk]` for r < m, n0 ≤ j < n1 (f32 weights).
void mmq_f32_matmul_t(int path, const float *x, size_t m, const float *w, size_t n0, size_t n1, size_t k, float *y,
                      size_t ldy);
/// `y[r * ldy + j] = Σ_k x[r * k + kk] · w[j * k + kk]` for r < m, n0 ≤ j < n1: f32 weights, read once for all m
/// rows (decode; `sgemm` packs its operands first, which costs more than the product below ~16 rows).
void mmq_f32_matmul_t(int path, const float *x, size_t m, const float *w, size_t n0, size_t n1, size_t k, float *y,
                      size_t ldy);
/// `y[r * ldy + j] = Σ_k x[r * k + kk] · bf16(w[j * k + kk])` for r < m, n0 ≤ j < n1.
void mmq_bf16_matmul_t(int path, const float *x, size_t m, const uint16_t *w, size_t n0, size_t n1, size_t k,
                       float *y, size_t ldy);
/// As `mmq_bf16_matmul_t`, with `W[j, kk] = q[j * k + kk] · scales[j]`.
void mmq_int8_matmul_t(int path, const float *x, size_t m, const int8_t *q, const float *scales, size_t n0,
                       size_t n1, size_t k, float *y, size_t ldy);

/// `out[i] = bf16(w[i])` for `count` values.
void mmq_bf16_dequantize(const uint16_t *w, size_t count, float *out);
/// `out[j * k + kk] = q[j * k + kk] · scales[j]` for `rows` rows.
void mmq_int8_dequantize(const int8_t *q, const float *scales, size_t rows, size_t k, float *out);

/// Per-row symmetric int8: `scales[j] = max_k |w[j, k]| / 127` (0 for an all-zero row),
/// `q[j, k] = clamp(round_half_even(w[j, k] / scales[j]), −127, 127)`. Returns how many values were not finite
/// (stored as 0; the caller refuses such weights).
size_t mmq_int8_quantize(const float *w, size_t rows, size_t k, int8_t *q, float *scales);
/// e4m3fn (s.eeee.mmm, bias 7, largest 448, no infinities) bits of `v` rounded to nearest even, for finite `v`;
/// magnitudes above 448 give ±448.
uint8_t mmq_e4m3_from_float(float v);
/// The value of e4m3fn `bits` (0x7f and 0xff are NaN).
float mmq_e4m3_to_float(uint8_t bits);
/// Block-scaled e4m3fn: for each block of `block_rows × block_columns` weights, `scale = max |w| / 448` (0 for an
/// all-zero block) and `q = e4m3(w / scale)`; `scales` is `[⌈rows / block_rows⌉, ⌈k / block_columns⌉]`. Returns how
/// many values were not finite (stored as 0; the caller refuses such weights).
size_t mmq_e4m3_quantize(const float *w, size_t rows, size_t k, size_t block_rows, size_t block_columns, uint8_t *q,
                         float *scales);
/// f32 → bf16 with round-to-nearest-even (NaN stays a quiet NaN).
void mmq_bf16_quantize(const float *w, size_t count, uint16_t *out);

#endif
