#!/usr/bin/env bash
# Installs what MoEMesh needs on a fresh Debian/Ubuntu machine with Swift 6.1+ on PATH:
# OpenBLAS (the CPU kernels), protoc (only to regenerate the committed gRPC code), Debian's gRPC C++ packages (the
# data plane links libgrpc++ through Sources/CGRPCBridge; the C++ client too) and CMake (the C++ client). Safe to run
# again.
set -euo pipefail

missing=()
[ -e /usr/include/x86_64-linux-gnu/cblas.h ] || [ -e /usr/include/cblas.h ] || [ -e /usr/include/aarch64-linux-gnu/cblas.h ] \
    || missing+=(libopenblas-dev)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
# The data plane (Sources/CGRPCBridge) and the C++ client (clients/cpp): Debian's gRPC C++ packages; CMake for the client.
command -v cmake >/dev/null || missing+=(cmake)
# A C++ compiler: the C++ client, and the CUDA emulator the GPU tests run on (scripts/emulated-cuda.sh).
command -v g++ >/dev/null || command -v c++ >/dev/null || missing+=(g++)
command -v grpc_cpp_plugin >/dev/null || missing+=(protobuf-compiler-grpc)
[ -e /usr/include/grpcpp/grpcpp.h ] || missing+=(libgrpc++-dev)
[ -e /usr/include/google/protobuf/message.h ] || missing+=(libprotobuf-dev)

if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing: ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

command -v swift >/dev/null || { echo "swift is not on PATH: install Swift 6.1 or later" >&2; exit 1; }
