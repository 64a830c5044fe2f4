#!/usr/bin/env bash
# On a machine with the CUDA toolkit: checks that the constants and the struct layout declared in
# Sources/CCUDA/include/ccuda.h (which lets MoEMesh build without CUDA) match the real headers.
# Usage: scripts/check-cuda-abi.sh [CUDA_HOME]   (default /usr/local/cuda)
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=${1:-/usr/local/cuda}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
{
    echo '#include <stddef.h>'
    echo '#include <cuda.h>'
    echo '#include <cublasLt.h>'
    echo '#include <cublas_v2.h>'
    # "    CCUDA_X = 16,   // REAL_NAME" → _Static_assert(REAL_NAME == 16, "CCUDA_X");
    sed -n 's|^ *\(C[A-Z0-9_]*\) = \([0-9]*\), *// *\([A-Za-z0-9_]*\)$|_Static_assert(\3 == \2, "\1 should be \3");|p' \
        Sources/CCUDA/include/ccuda.h
    echo '_Static_assert(sizeof(cublasLtMatmulAlgo_t) == 64, "cublasLtMatmulAlgo_t");'
    echo '_Static_assert(offsetof(cublasLtMatmulHeuristicResult_t, workspaceSize) == 64, "heuristic result layout");'
    echo '_Static_assert(offsetof(cublasLtMatmulHeuristicResult_t, state) == 72, "heuristic result layout");'
    echo '_Static_assert(sizeof(cublasLtMatmulHeuristicResult_t) == 96, "heuristic result size");'
    echo 'int main(void) { return 0; }'
} >"$work/abi.c"
count=$(grep -c _Static_assert "$work/abi.c")
gcc -std=c11 -I"$cuda/include" -c "$work/abi.c" -o "$work/abi.o"
echo "ccuda.h matches the CUDA headers in $cuda ($count checks)"
