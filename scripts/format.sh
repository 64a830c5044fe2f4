#!/usr/bin/env bash
# Formats every Swift source of the project with the toolchain's formatter and .swift-format (120 columns), the
# generated code (any Generated/ folder) excepted. --check: change nothing, fail on the first difference
# (scripts/test.sh runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(find Sources Tests -name '*.swift' -not -path '*/Generated/*' | sort; echo Package.swift)
if [ "${1:-}" = "--check" ]; then
    swift format lint --strict "${files[@]}" || { echo "swift format: run scripts/format.sh" >&2; exit 1; }
    echo "swift format lint: ${#files[@]} files clean"
else
    swift format format -i "${files[@]}"
fi
