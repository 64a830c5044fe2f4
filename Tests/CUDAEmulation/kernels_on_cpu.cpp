// expert_kernels.cu compiled for the CPU (cuda_emulation.h), with a C entry point per kernel for the tests
// (clients/python/tests/test_cuda_kernels.py loads this as a shared library). Each takes the grid and block size
// first, then the kernel's own arguments.
#include "cuda_emulation.h"

#include "../../Sources/MoECUDA/expert_kernels.cu"

extern "C" {
void emulate_f32_to_bf16(unsigned grid, unsigned block, const float *in, bf16 *out, long long n) {
    emulateLaunch(f32_to_bf16, grid, block, in, out, n);
}

void emulate_gated_activation(unsigned grid, unsigned block, const bf16 *a, bf16 *z, int rows, int width, int code) {
    emulateLaunch(gated_activation, grid, block, a, z, rows, width, code);
}

void emulate_quantized_matmul(unsigned grid, unsigned block, const unsigned char *w, const float *scales, int format,
                              int blockRows, int blockColumns, int scaleColumns, const bf16 *x, int n, int rows, int k,
                              void *y, int outputF32) {
    emulateLaunch(quantized_matmul, grid, block, w, scales, format, blockRows, blockColumns, scaleColumns, x, n, rows,
                  k, y, outputF32);
}

void emulate_dequantize_to_bf16(unsigned grid, unsigned block, const unsigned char *w, const float *scales,
                                int format, int blockRows, int blockColumns, int scaleColumns, bf16 *out, int rows,
                                int k) {
    emulateLaunch(dequantize_to_bf16, grid, block, w, scales, format, blockRows, blockColumns, scaleColumns, out, rows,
                  k);
}
}
