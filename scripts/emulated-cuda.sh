#!/usr/bin/env bash
# The emulated CUDA device (Tests/CUDAEmulation: the driver, cuBLASLt and cuBLAS on the CPU, NVRTC from the
# nvidia-cuda-nvrtc-cu12 wheel) in FOLDER, and the environment in which MoEMesh opens it, printed as NAME=VALUE lines:
#
#     env $(scripts/emulated-cuda.sh /tmp/cuda) .build/debug/moemesh kernels check --device cuda
#
# PYTHON (default .venv/bin/python) is the interpreter whose site-packages hold the wheel. Used by scripts/test.sh
# (the Swift GPU tests) and by clients/python/tests/test_cuda_kernels.py.
set -euo pipefail
folder="${1:?usage: scripts/emulated-cuda.sh FOLDER}"
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
compiler="$(command -v g++ || command -v c++ || command -v clang++ || true)"
[ -n "$compiler" ] || { echo "emulated-cuda.sh: a C++20 compiler (g++) is needed to emulate CUDA on the CPU" >&2; exit 1; }
nvrtc="$("$python" -c 'import os, nvidia.cuda_nvrtc as m; print(os.path.join(list(m.__path__)[0], "lib"))')"
mkdir -p "$folder"
# CUDA code reads values through pointers of other types (uint4 as bf16), hence -fno-strict-aliasing.
"$compiler" -std=c++20 -O2 -fno-strict-aliasing -fPIC -shared -pthread -Wall -Werror -Wno-unknown-pragmas \
    -Wl,-soname,libcuda.so.1 -o "$folder/libemulated_cuda.so" "$root/Tests/CUDAEmulation/emulated_cuda.cpp"
for name in libcuda.so.1 libcublasLt.so.12 libcublas.so.12; do ln -sfn libemulated_cuda.so "$folder/$name"; done
ln -sfn "$nvrtc/libnvrtc.so.12" "$folder/libnvrtc.so.12"
echo "MOEMESH_CUDA_LIB_DIR=$folder"
echo "LD_LIBRARY_PATH=$nvrtc${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
