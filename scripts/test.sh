#!/usr/bin/env bash
# Sets up and runs every test: unit suites, in-process gRPC services, and real `moemesh` processes on
# loopback. Also checks that scripts/generate-protos.sh reproduces the committed gRPC code.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== generated code matches Protos/" >&2
scripts/generate-protos.sh
if ! git diff --quiet -- Sources/MoEProto || [ -n "$(git status --porcelain -- Sources/MoEProto)" ]; then
    echo "Sources/MoEProto differs from what Protos/ generates: run scripts/generate-protos.sh and commit" >&2
    git status --short -- Sources/MoEProto >&2
    exit 1
fi

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

echo "== build" >&2
swift build --build-tests
echo "== tests" >&2
swift test --skip-build
