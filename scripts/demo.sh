#!/usr/bin/env bash
# Sets up, builds (release) and runs the demo mesh: `moemesh up` serving a synthetic Mixtral-layout model on
# 127.0.0.1:50051 (one process per expert plus a router). Extra arguments go to `moemesh up`. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release --product moemesh
exec .build/release/moemesh up "$@"
