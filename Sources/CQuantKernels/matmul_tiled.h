// The body of every weight-only matrix product, included by quant_kernels.c once per (instruction set, weight type).
// It defines `MMQ_FN(x, m, w, scales, n0, n1, k, y, ldy)`: `y[r * ldy + j] = scale(j) · Σ_kk x[r * k + kk] ·
// widen(w[j * k + kk])` for r < m and n0 ≤ j < n1, with scale(j) = scales[j], or 1 where scales is NULL.
//
// Tiles of 4 weight rows × R activation rows (R = MMQ_ROWS, then 2, then 1 for what is left): each weight vector is
// loaded and widened once per R activation rows, and the 4 weight rows stay in L1 while every activation row passes
// over them, so each stored weight is read from memory once for all m rows.
//
// The includer defines:
//   MMQ_FN, MMQ_TARGET              the function's name and its target attribute (empty for the portable path)
//   MMQ_V, MMQ_LANES                the f32 vector type and its width
//   MMQ_ZERO(), MMQ_LOADX(p), MMQ_FMA(a, b, c), MMQ_SUM(v)   its operations (FMA: a · b + c; SUM: across lanes)
//   MMQ_W, MMQ_LOADW(p), MMQ_WIDEN(w)                      the stored type, MMQ_LANES of them widened, one widened
//   MMQ_ROWS                        activation rows per tile that the registers hold (4 × MMQ_ROWS accumulators)

#define MMQ_TILE_FN MMQ_JOIN(MMQ_FN, _tile)
#define MMQ_UNROLL _Pragma("GCC unroll 8")
#define MMQ_JOIN(a, b) MMQ_JOIN_(a, b)
#define MMQ_JOIN_(a, b) a##b

// Weight rows j..j+3 × activation rows r..r+rows-1; `rows` is a constant at every call, so the loops unroll and the
// accumulators live in registers.
MMQ_TARGET __attribute__((always_inline)) static inline void MMQ_TILE_FN(const float *x, const MMQ_W *w,
                                                                         const float *scales, size_t j, size_t r,
                                                                         int rows, size_t k, float *y, size_t ldy) {
    const MMQ_W *w0 = w + j * k;
    const size_t kv = k - k % (MMQ_LANES);
    MMQ_V acc[MMQ_ROWS][4];
    MMQ_UNROLL for (int a = 0; a < rows; a++)
        MMQ_UNROLL for (int t = 0; t < 4; t++) acc[a][t] = MMQ_ZERO();
    // The next tile's weights follow this one's in memory; fetch them into L2 while this tile computes (the first
    // pass of the activation rows only). Rows of 1–11 KiB are too short for the hardware prefetcher to reach full
    // speed, and fetching into L2 rather than L1 leaves the L1's few miss buffers to the loads: one core's decode
    // product went from ~14 to ~20 GB/s of bf16 weights (locality 3, into L1: no gain over none).
    const char *next = (const char *)(w0 + 4 * k);
    const size_t step = 4 * (MMQ_LANES) * sizeof(MMQ_W);
    for (size_t kk = 0; kk < kv; kk += (MMQ_LANES)) {
        if (r == 0)
            for (size_t line = 0; line < step; line += 64) __builtin_prefetch(next + 4 * kk * sizeof(MMQ_W) + line, 0, 1);
        MMQ_V wv[4];
        MMQ_UNROLL for (int t = 0; t < 4; t++) wv[t] = MMQ_LOADW(w0 + t * k + kk);
        MMQ_UNROLL for (int a = 0; a < rows; a++) {
            const MMQ_V xv = MMQ_LOADX(x + (r + a) * k + kk);
            MMQ_UNROLL for (int t = 0; t < 4; t++) acc[a][t] = MMQ_FMA(xv, wv[t], acc[a][t]);
        }
    }
    MMQ_UNROLL for (int a = 0; a < rows; a++) {
        const float *xr = x + (r + a) * k;
        MMQ_UNROLL for (int t = 0; t < 4; t++) {
            float sum = MMQ_SUM(acc[a][t]);
            for (size_t kk = kv; kk < k; kk++) sum += xr[kk] * MMQ_WIDEN(w0[t * k + kk]);
            y[(r + a) * ldy + j + t] = scales ? sum * scales[j + t] : sum;
        }
    }
}

MMQ_TARGET static void MMQ_FN(const float *x, size_t m, const MMQ_W *w, const float *scales, size_t n0, size_t n1,
                              size_t k, float *y, size_t ldy) {
    size_t j = n0;
    for (; j + 4 <= n1; j += 4) {
        size_t r = 0;
        for (; r + (MMQ_ROWS) <= m; r += (MMQ_ROWS)) MMQ_TILE_FN(x, w, scales, j, r, MMQ_ROWS, k, y, ldy);
        for (; r + 2 <= m; r += 2) MMQ_TILE_FN(x, w, scales, j, r, 2, k, y, ldy);
        if (r < m) MMQ_TILE_FN(x, w, scales, j, r, 1, k, y, ldy);
    }
    // The last n1 − j < 4 weight rows, one at a time.
    for (; j < n1; j++) {
        const MMQ_W *row = w + j * k;
        for (size_t r = 0; r < m; r++) {
            const float *xr = x + r * k;
            float sum = 0;
            for (size_t kk = 0; kk < k; kk++) sum += xr[kk] * MMQ_WIDEN(row[kk]);
            y[r * ldy + j] = scales ? sum * scales[j] : sum;
        }
    }
}

#undef MMQ_TILE_FN
#undef MMQ_UNROLL
#undef MMQ_FN
#undef MMQ_W
#undef MMQ_LOADW
#undef MMQ_WIDEN
