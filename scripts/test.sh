#!/usr/bin/env bash
# Sets up and runs every test: unit suites, in-process gRPC services, and real `moemesh` processes on
# loopback. Also checks that scripts/generate-protos.sh reproduces the committed gRPC code, validates the
# deployment files offline, checks the coordinator's status page in headless Chromium and runs the fuzz targets briefly.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== swift format (.swift-format: 120 columns)" >&2
scripts/format.sh --check

echo "== generated code matches Protos/" >&2
scripts/generate-protos.sh
if ! git diff --quiet -- Sources/MoEProto || [ -n "$(git status --porcelain -- Sources/MoEProto)" ]; then
    echo "Sources/MoEProto differs from what Protos/ generates: run scripts/generate-protos.sh and commit" >&2
    git status --short -- Sources/MoEProto >&2
    exit 1
fi

echo "== embedded CUDA kernel source matches Sources/MoECUDA/expert_kernels.cu" >&2
scripts/generate-cuda-source.sh --check

echo "== golden checkpoints match scripts/golden/make_golden_models.py" >&2
python3 -c 'import numpy' 2>/dev/null || python3 -m pip install --quiet numpy
python3 scripts/golden/make_golden_models.py >/dev/null
if [ -n "$(git status --porcelain -- Tests/Fixtures)" ]; then
    echo "Tests/Fixtures/golden differs from what the generator writes: run it and commit" >&2
    git status --short -- Tests/Fixtures >&2
    exit 1
fi

# The interop test calls the mesh from Python (grpcio), as users in other languages do.
python3 -c 'import grpc_tools, numpy' 2>/dev/null || python3 -m pip install --quiet grpcio grpcio-tools numpy
export MOEMESH_REQUIRE_PYTHON=1

echo "== Python client: a virtual environment (.venv) with torch (CPU), transformers, NVRTC and ptxas (compile the CUDA kernels in a test), mypy and the typing stubs; stubs match Protos/" >&2
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet "torch==2.13.0+cpu" "transformers==5.24.0" "grpcio-tools==1.85.1" \
    "nvidia-cuda-nvrtc-cu12==12.9.86" "nvidia-cuda-nvcc-cu12==12.9.86" "mypy-protobuf==5.1.0" "mypy==2.4.1" \
    "grpc-stubs==1.53.0.6" "types-protobuf==7.35.1.20261122" "grpcio-reflection==1.85.1" -e "clients/python[test]"
PYTHON=.venv/bin/python clients/python/generate_stubs.sh
if [ -n "$(git status --porcelain -- clients/python/src/moemesh/v1)" ]; then
    echo "clients/python/src/moemesh/v1 differs from what Protos/ generates: run clients/python/generate_stubs.sh" >&2
    git status --short -- clients/python/src/moemesh/v1 >&2
    exit 1
fi

echo "== build" >&2
swift build --build-tests

echo "== docs/configuration.md matches the commands' options" >&2
python3 scripts/config-keys.py .build/debug/moemesh --check
echo "== the module graph in docs/architecture.md matches Package.swift, imports match the manifest, no kernels under the router" >&2
python3 scripts/module-graph.py --check
echo "== deployment files: kustomize overlays, k8s render, compose, Dockerfiles" >&2
scripts/validate-deploy.sh .build/debug/moemesh
echo "== status page in headless Chromium" >&2
shot_dir="$(mktemp -d)"
scripts/check-status-page.sh .build/debug/moemesh "$shot_dir/status-page.png"
rm -rf "$shot_dir"

echo "== fuzz targets, briefly (Fuzz/README.md; saved regressions replayed first)" >&2
scripts/fuzz.sh --seconds 15

echo "== tests" >&2
# The Swift tests are Swift Testing's (XCTest reports 0 of its own); then the Python and C++ clients' (pytest, against
# real meshes of the debug binary). End with one plain "N passed, N failed" line.
log="$(mktemp)"
set +e
swift test --skip-build 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The GPU tests (skipped above, where no CUDA device opens) again on the emulated device: each must run and pass.
cuda_dir="$(mktemp -d)"
gpulog="$(mktemp)"
env $(scripts/emulated-cuda.sh "$cuda_dir") swift test --skip-build --filter CUDABackendTests 2>&1 | tee "$gpulog"
gpu_status=${PIPESTATUS[0]}
gpu_passed="$(grep -c '✔ Test "GPU: ' "$gpulog" || true)"
gpu_declared="$(grep -c '"GPU: ' Tests/MoEKernelsTests/CUDABackendTests.swift || true)"
if [ "$gpu_status" -ne 0 ] || [ "$gpu_passed" -ne "$gpu_declared" ]; then
    echo "the GPU tests on the emulated CUDA device: $gpu_passed of $gpu_declared passed (swift test exited with $gpu_status)" >&2
    status=1
fi
rm -rf "$cuda_dir" "$gpulog"
pylog="$(mktemp)"
MOEMESH_BINARY=.build/debug/moemesh .venv/bin/python -m pytest clients/python/tests -q -p no:cacheprovider \
    2>&1 | tee "$pylog"
python_status=${PIPESTATUS[0]}
set -e
swift_passed="$(grep -Eo 'Test run with [0-9]+ tests?' "$log" | tail -1 | grep -Eo '[0-9]+' || true)"
failed="$(grep -Eo 'with [0-9]+ issues?' "$log" | tail -1 | grep -Eo '[0-9]+' || true)"
# pytest's last line: "N passed[, M failed] in S s".
summary="$(tail -1 "$pylog")"
python_passed="$(grep -Eo '[0-9]+ passed' <<<"$summary" | grep -Eo '[0-9]+' || true)"
python_failed="$(grep -Eo '[0-9]+ (failed|errors?)' <<<"$summary" | head -1 | grep -Eo '^[0-9]+' || true)"
rm -f "$log" "$pylog"
if [ "$status" -eq 0 ] && [ "$python_status" -eq 0 ] && [ -n "$swift_passed" ] && [ -n "$python_passed" ]; then
    echo "$((swift_passed + gpu_passed + python_passed)) passed, 0 failed ($swift_passed Swift, $gpu_passed Swift on the emulated CUDA device, $python_passed Python and C++)"
    exit 0
fi
echo "tests failed (swift test exited with $status${failed:+, $failed issues}; pytest exited with $python_status${python_failed:+, $python_failed failed})" >&2
exit 1
