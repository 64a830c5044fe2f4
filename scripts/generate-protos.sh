#!/usr/bin/env bash
# Regenerates Sources/MoEProto from Protos/ with protoc and the two Swift plugins, built from the same
# package versions as the main package (scripts/protoc-plugins). The output is committed; running this
# again on an unchanged Protos/ reproduces it byte for byte.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
plugins="$root/scripts/protoc-plugins"

if ! command -v protoc >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq protobuf-compiler; else
        echo "protoc is missing: apt-get install protobuf-compiler" >&2; exit 1; fi
fi

swift build --package-path "$plugins" -c release --product protoc-gen-swift >&2
swift build --package-path "$plugins" -c release --product protoc-gen-grpc-swift-2 >&2
bin="$(swift build --package-path "$plugins" -c release --show-bin-path)"

out="$root/Sources/MoEProto/Generated"
rm -rf "$out" && mkdir -p "$out"
cd "$root/Protos"
protoc \
    --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
    --plugin=protoc-gen-grpc-swift-2="$bin/protoc-gen-grpc-swift-2" \
    --swift_opt=Visibility=Public --swift_out="$out" \
    --grpc-swift-2_opt=Visibility=Public --grpc-swift-2_out="$out" \
    $(find . -name '*.proto' | sort)
echo "generated into ${out#$root/}: $(find "$out" -name '*.swift' | wc -l) files" >&2
