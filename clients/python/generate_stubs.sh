#!/usr/bin/env bash
# Regenerates the Python gRPC stubs (src/moemesh/v1/) from Protos/ with grpcio-tools, and their type stubs (.pyi, for
# messages and services: mypy --strict clean) with mypy-protobuf. The output is committed; scripts/test.sh runs this
# again and fails if it differs. PYTHON: an interpreter with grpcio-tools and mypy-protobuf (default python3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/src"
python="${PYTHON:-python3}"
case "$python" in */*) [ "${python#/}" != "$python" ] || python="$PWD/$python" ;; esac
rm -f "$out"/moemesh/v1/*_pb2*.py "$out"/moemesh/v1/*_pb2*.pyi
mkdir -p "$out/moemesh/v1"
plugins="$(dirname "$(command -v "$python")")"
[ -x "$plugins/protoc-gen-mypy_grpc" ] || { echo "no protoc-gen-mypy_grpc beside $python: pip install mypy-protobuf" >&2; exit 1; }
cd "$root/Protos"
"$python" -m grpc_tools.protoc -I. --python_out="$out" --grpc_python_out="$out" \
    --plugin=protoc-gen-mypy="$plugins/protoc-gen-mypy" --mypy_out="$out" \
    --plugin=protoc-gen-mypy_grpc="$plugins/protoc-gen-mypy_grpc" --mypy_grpc_out="$out" \
    moemesh/v1/tensor.proto moemesh/v1/router.proto moemesh/v1/expert.proto moemesh/v1/coordinator.proto
touch "$out/moemesh/v1/__init__.py"
echo "generated into clients/python/src/moemesh/v1: $(ls "$out"/moemesh/v1/*_pb2*.py | wc -l) files" >&2
