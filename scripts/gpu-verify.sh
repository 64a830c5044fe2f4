#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and CUDA 12/13 (no Swift needed): everything the CUDA backend must pass.
#   1. ccuda.h against the real CUDA headers (when the toolkit is there);
#   2. `moemesh kernels check`: every expert form on the GPU against the CPU backend (1e-2 relative);
#   3. a mesh whose experts run on the GPU (`moemesh up --device cuda`) answering `forward`, checked against the
#      in-process CPU reference (`--compare-model`), f32 and bf16 checkpoints;
#   4. one expert service hosting every expert under a 40 MiB GPU budget (paging, grouped steps of the router's
#      fan-out) behind a router with --prefetch-next-layer, answering `forward --compare-model`; its /metrics;
#   5. a mesh of int8 and fp8 GPU experts (`up --device cuda --precision`) within their quantisation error of f32;
#   6. `moemesh kernels bench --precisions bf16,int8,fp8`: the Mixtral-size expert's decode and prefill per precision,
#      weight TB/s against the memory's peak (at T = 1 at least half of it);
#   7. scripts/bench_gpu.py: the Mixtral-size expert against PyTorch on the same GPU (when PyTorch is there).
# Without a GPU, clients/python/tests/test_cuda_kernels.py runs steps 2 and 5 on a CUDA device emulated on the CPU.
# Usage: scripts/gpu-verify.sh [MOEMESH_BINARY] [LOG_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
binary=$(realpath "${1:-.build/release/moemesh}")
# gRPC's C++ core, carried beside the binary where the machine lacks it (scripts/bundle-grpc-libs.sh).
if [[ -d "$(dirname "$binary")/lib" ]]; then
    export LD_LIBRARY_PATH="$(dirname "$binary")/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if missing=$(ldd "$binary" | grep "not found"); then
    echo "the binary needs libraries this machine lacks:" >&2
    echo "$missing" >&2
    echo "bundle gRPC's with scripts/bundle-grpc-libs.sh BINARY DIR where it was built, and copy DIR/lib beside it" >&2
    exit 1
fi
logs=${2:-/tmp/moemesh-gpu-verify}
mkdir -p "$logs"
models=$(mktemp -d)
trap 'rm -rf "$models"' EXIT
failures=0
step() { echo; echo "== $*"; }
fail() { echo "FAILED: $*"; failures=$((failures + 1)); }
# Waits up to 60 s for the router on 127.0.0.1:50071 to answer its health check.
router_ready() {
    for _ in $(seq 1 120); do
        if "$binary" health --endpoint 127.0.0.1:50071 >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    return 1
}

step "GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv || fail "nvidia-smi"

if [[ -d /usr/local/cuda/include ]]; then
    step "ccuda.h against the CUDA headers"
    scripts/check-cuda-abi.sh /usr/local/cuda || fail "ABI check"
fi

step "moemesh kernels check --device cuda"
"$binary" kernels check --device cuda 2>&1 | tee "$logs/kernels-check.txt"
[[ ${PIPESTATUS[0]} == 0 ]] || fail "kernels check"

for dtype in f32 bf16; do
    step "mesh with GPU experts ($dtype checkpoint): up --device cuda, forward --compare-model"
    model="$models/model-$dtype"
    rm -rf "$model"
    "$binary" synth --out "$model" --dtype "$dtype" --experts 8 --top-k 2 --hidden 1024 --intermediate 2816 --layers 2 >/dev/null
    "$binary" up --model "$model" --device cuda --port 50071 --coordinator-port 50072 --log-level warning \
        >"$logs/up-$dtype.log" 2>&1 &
    up=$!
    if router_ready; then
        for layer in 0 1; do
            "$binary" forward --router 127.0.0.1:50071 --layer "$layer" --random 96 --compare-model "$model" \
                || fail "forward layer $layer ($dtype)"
        done
        "$binary" forward --router 127.0.0.1:50071 --layer 0 --random 1 --dtype bf16 --compare-model "$model" \
            || fail "forward 1 bf16 row ($dtype)"
        "$binary" status --coordinator 127.0.0.1:50072 2>&1 | head -20
    else
        fail "mesh did not become ready ($dtype)"; tail -30 "$logs/up-$dtype.log"
    fi
    kill -TERM $up 2>/dev/null; wait $up 2>/dev/null
done

step "one GPU expert service, 40 MiB budget (2 of 16 experts), router with --prefetch-next-layer"
model="$models/model-bf16"
"$binary" expert --model "$model" --device cuda --gpu-memory-budget-mib 40 --port 50081 --http-port 50082 \
    --log-level warning >"$logs/expert-budget.log" 2>&1 &
expert=$!
"$binary" router --model "$model" --expert 127.0.0.1:50081 --port 50071 --prefetch-next-layer --log-level warning \
    >"$logs/router-prefetch.log" 2>&1 &
router=$!
if router_ready; then
    for round in 1 2; do
        for layer in 0 1; do
            "$binary" forward --router 127.0.0.1:50071 --layer "$layer" --random 64 --compare-model "$model" \
                || fail "forward layer $layer under a GPU budget (round $round)"
        done
    done
    sleep 1
    if command -v curl >/dev/null; then
        curl -s http://127.0.0.1:50082/metrics | grep -E "^moemesh_expert_cache_(hits|misses|evictions|prefetches)_total|^moemesh_expert_cache_resident_bytes" \
            | tee "$logs/expert-budget-metrics.txt"
    else
        python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:50082/metrics').read().decode())" \
            | grep -E "^moemesh_expert_cache_" | tee "$logs/expert-budget-metrics.txt"
    fi
    grep -q "moemesh_expert_cache_evictions_total" "$logs/expert-budget-metrics.txt" || fail "no cache metrics"
else
    fail "budgeted GPU expert or router did not become ready"; tail -30 "$logs/expert-budget.log" "$logs/router-prefetch.log"
fi
kill -TERM $router $expert 2>/dev/null; wait $router $expert 2>/dev/null

for precision in int8 fp8; do
    step "mesh with $precision GPU experts: up --device cuda --precision $precision, forward --compare-model"
    model="$models/model-bf16"
    # int8 keeps ~7 bits at a row's largest weights, e4m3 3 mantissa bits: tolerances as quantize-report measures.
    tolerance=$([[ $precision == int8 ]] && echo 3e-2 || echo 7e-2)
    "$binary" up --model "$model" --device cuda --precision "$precision" --port 50071 --coordinator-port 50072 \
        --log-level warning >"$logs/up-$precision.log" 2>&1 &
    up=$!
    if router_ready; then
        for rows in 1 96; do
            "$binary" forward --router 127.0.0.1:50071 --layer 0 --random "$rows" --compare-model "$model" \
                --tolerance "$tolerance" || fail "forward $rows rows ($precision experts)"
        done
        "$binary" status --coordinator 127.0.0.1:50072 2>&1 | head -24
    else
        fail "mesh did not become ready ($precision)"; tail -30 "$logs/up-$precision.log"
    fi
    kill -TERM $up 2>/dev/null; wait $up 2>/dev/null
done

step "Mixtral-size expert per precision: kernels bench --precisions bf16,int8,fp8 (weight TB/s against the peak)"
# At T = 1 each precision streams its weights at >= 50% of the memory's peak (expert_kernels.cu, quantized_matmul).
"$binary" kernels bench --device cuda --precisions bf16,int8,fp8 --tokens 1,4,8,16,32,512,4096 \
    --expect-decode-fraction 0.5 2>&1 | tee "$logs/bench-precisions.txt"
[[ ${PIPESTATUS[0]} == 0 ]] || fail "kernels bench --precisions: decode below 0.5 of the memory's peak bandwidth"

if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    step "Mixtral-size expert against PyTorch"
    PYTHONUNBUFFERED=1 python3 scripts/bench_gpu.py --moemesh "$binary" --json "$logs/bench.json" || fail "bench"
fi

echo
if [[ $failures == 0 ]]; then echo "gpu-verify: all passed"; else echo "gpu-verify: $failures failed"; fi
exit $((failures > 0))
