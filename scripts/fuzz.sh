#!/usr/bin/env bash
# Builds the libFuzzer targets (Fuzz/, with AddressSanitizer, in their own scratch path .build-fuzz) and runs each
# for a given time, seeded from the golden fixtures (Fuzz/make_seeds.py) and the saved regressions
# (Fuzz/Regressions/<target>/, replayed first). Prints each target's executions and findings; exits 1 on any.
#
#   scripts/fuzz.sh                      # every target, 60 s each
#   scripts/fuzz.sh --seconds 600        # the record: 10 minutes each
#   scripts/fuzz.sh --seconds 20 FuzzWireTensor FuzzForwardRequest
#
# Findings (crashing, leaking, hanging or out-of-memory inputs) land in .build-fuzz/findings/; each fixed one is
# kept in Fuzz/Regressions/<target>/ and as a Swift test. Targets run two at a time (--jobs N to change).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
jobs=2
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --jobs) jobs="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
all=(FuzzSafeTensors FuzzModelConfig FuzzWireTensor FuzzForwardRequest)
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

scratch=.build-fuzz
# -sanitize=fuzzer would also link libFuzzer's main, which clashes with the main SwiftPM gives every executable;
# the same instrumentation (AddressSanitizer and libFuzzer's coverage) is asked for directly, and the fuzzer
# runtime without its main is linked: each target's main calls LLVMFuzzerRunDriver (Fuzz/Sources/CFuzzerDriver).
swiftc="$(readlink -f "$(command -v swiftc)")"
runtime="$(ls "$(dirname "$swiftc")"/../lib/clang/*/lib/linux/libclang_rt.fuzzer_no_main-x86_64.a | head -1)"
[ -f "$runtime" ] || { echo "fuzz.sh: no libclang_rt.fuzzer_no_main in the Swift toolchain" >&2; exit 2; }
flags=(-c release --package-path Fuzz --scratch-path "$scratch"
    -Xswiftc -sanitize=address -Xswiftc -sanitize-coverage=edge,trace-cmp,inline-8bit-counters,pc-table,indirect-calls
    -Xlinker "$runtime" -Xlinker -lstdc++)
echo "== build the fuzz targets (release, AddressSanitizer, libFuzzer coverage) in $scratch" >&2
mkdir -p "$scratch"
# An existing build manifest keeps the main package's old list of source files (it is a path dependency here): a
# file added since the last fuzz build would be missing from it. Planned again, the build stays incremental.
rm -f "$scratch/release.yaml"
if ! swift build "${flags[@]}" >"$scratch/build.log" 2>&1; then
    grep -E 'error' "$scratch/build.log" | grep -v 'ld.gold: warning' | head -20 >&2
    echo "fuzz.sh: the build failed (whole log: $scratch/build.log)" >&2
    exit 2
fi
bin="$(swift build "${flags[@]}" --show-bin-path)"
for target in "${targets[@]}"; do
    [ -x "$bin/$target" ] || { echo "fuzz.sh: $bin/$target was not built (a target of Fuzz/Package.swift?)" >&2; exit 2; }
done

python3 -c 'import google.protobuf, numpy' 2>/dev/null || python3 -m pip install --quiet protobuf numpy
rm -rf "$scratch/seeds"
python3 Fuzz/make_seeds.py "$scratch/seeds"
mkdir -p "$scratch/findings" "$scratch/logs"

run_target() {
    local target="$1" corpus="$scratch/corpus/$1" log="$scratch/logs/$1.log"
    mkdir -p "$corpus"
    local regressions=()
    if compgen -G "Fuzz/Regressions/$target/*" >/dev/null; then
        # Each saved finding must now pass (libFuzzer runs the given files once each).
        if ! SWIFT_BACKTRACE=enable=no "$bin/$target" Fuzz/Regressions/"$target"/* >"$scratch/logs/$target.regressions.log" 2>&1; then
            echo "$target: a saved regression fails again (see $scratch/logs/$target.regressions.log)" >"$log"
            return
        fi
        regressions=("Fuzz/Regressions/$target")
    fi
    # -timeout: a single input running over 10 s is a hang; -rss_limit_mb: over 2 GiB is a memory finding.
    # SWIFT_BACKTRACE=enable=no: a Swift trap is reported by libFuzzer, not by the runtime's backtracer.
    SWIFT_BACKTRACE=enable=no MOEMESH_FUZZ_MODEL=Tests/Fixtures/golden/qwen2_moe-f32 "$bin/$target" "$corpus" "$scratch/seeds/$target" \
        "${regressions[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$scratch/findings/$target-" >"$log" 2>&1 || true
}

echo "== fuzz ${targets[*]}: ${seconds} s each, $jobs at a time" >&2
running=0
for target in "${targets[@]}"; do
    run_target "$target" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait

failed=0
for target in "${targets[@]}"; do
    log="$scratch/logs/$target.log"
    runs="$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || true)"
    # libFuzzer stops at its first finding: then the run was shorter than asked.
    ran="$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | grep -Eo '[0-9]+ second' | grep -Eo '[0-9]+' || true)"
    coverage="$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+' || true)"
    findings="$(grep -Ec '^(==[0-9]+==ERROR|SUMMARY: libFuzzer)|Fatal error|a saved regression fails' "$log" || true)"
    echo "$target: ${runs:-0} executions in ${ran:-less than $seconds} s, coverage ${coverage:-?} edges, $findings findings"
    if [ "$findings" -gt 0 ] || [ -z "$runs" ]; then
        failed=1
        grep -E 'ERROR|SUMMARY|Fatal error|Test unit written|a saved regression' "$log" | head -8 >&2
    fi
done
exit "$failed"
