#!/usr/bin/env bash
# Copies the shared libraries of gRPC's C++ core that BINARY links (libgrpc++, libgrpc, libgpr, abseil, upb, re2,
# c-ares, address_sorting) into DIR/lib, for a machine without Debian's libgrpc++ 1.51 (the GPU machine runs Ubuntu
# 24.04): scripts/gpu-verify.sh puts BINARY's folder's lib/ on the loader's path. The C library, libstdc++, OpenSSL,
# zlib and OpenBLAS are left to the machine.
# Usage: scripts/bundle-grpc-libs.sh BINARY DIR
set -euo pipefail
binary=$1
lib="$2/lib"
mkdir -p "$lib"
ldd "$binary" | awk '$3 ~ /^\// {print $3}' \
    | grep -E '/lib(grpc|gpr|absl_|upb|re2|cares|address_sorting)[^/]*$' \
    | while read -r path; do cp -L "$path" "$lib/"; done
echo "$(ls "$lib" | wc -l) libraries in $lib"
