#!/usr/bin/env bash
# Sets up, builds (release) and runs the demo mesh: `moemesh up` serving a synthetic Mixtral-layout model on
# 127.0.0.1:50051 (a coordinator on 50050, one process per expert, a router). Extra arguments go to `moemesh up`
# (e.g. --http-port 8080 for the status page, --autoscale). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release --product moemesh
exec .build/release/moemesh up "$@"
