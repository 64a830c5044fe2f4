#!/usr/bin/env python3
"""Resident memory and cold start of an expert replica per weight precision.

    python3 scripts/bench_precision_memory.py [--moemesh .build/release/moemesh] [--experts 8] [--hidden 1024]
        [--intermediate 2816] [--dtype bf16] [--runs 3]

Synthesises a Mixtral-layout model (one layer of `--experts` experts, `--dtype` weights), then for f32, bf16 and
int8 starts `moemesh expert --experts '*:*' --precision P` on it and reads the process's resident memory (VmRSS) once
it prints its ready line, and the time from start to that line. The weights' memory is a replica's RSS minus that of
the same binary serving a model whose experts weigh nothing (H = I = 8): the process without its experts. Each figure
is the median of `--runs` starts. Only the standard library: no virtual environment needed.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resident_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def start_expert(binary: str, model: str, precision: str) -> tuple:
    """(resident bytes once ready, seconds to the ready line) of one `moemesh expert`."""
    started = time.monotonic()
    process = subprocess.Popen(
        [binary, "expert", "--model", model, "--experts", "*:*", "--precision", precision, "--port", "0",
         "--threads", "1", "--log-level", "warning"], stdout=subprocess.PIPE, text=True)
    try:
        for line in process.stdout:
            if line.startswith("expert listening on"):
                ready = time.monotonic() - started
                time.sleep(0.5)  # the trim after loading has run; the server idles
                return resident_bytes(process.pid), ready
        raise RuntimeError(f"the expert exited with {process.wait()} before it was ready")
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--moemesh", default=os.path.join(ROOT, ".build", "release", "moemesh"))
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--intermediate", type=int, default=2816)
    parser.add_argument("--dtype", default="bf16", choices=["f32", "bf16"])
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="moemesh-precision-") as folder:
        model, empty = os.path.join(folder, "model"), os.path.join(folder, "empty")
        for path, hidden, intermediate in ((model, arguments.hidden, arguments.intermediate), (empty, 8, 8)):
            subprocess.run(
                [arguments.moemesh, "synth", "--experts", str(arguments.experts), "--hidden", str(hidden),
                 "--intermediate", str(intermediate), "--layers", "1", "--dtype", arguments.dtype, "--out", path],
                check=True, stdout=subprocess.DEVNULL)
        baseline = statistics.median(start_expert(arguments.moemesh, empty, "f32")[0] for _ in range(arguments.runs))
        print(f"model: {arguments.experts} experts, H={arguments.hidden}, I={arguments.intermediate}, "
              f"{arguments.dtype} checkpoint; process without experts: {baseline / 2**20:.1f} MiB resident")
        print("precision   replica RSS MiB   weights MiB   × f32   ready s")
        figures = {}
        for precision in ("f32", "bf16", "int8"):
            runs = [start_expert(arguments.moemesh, model, precision) for _ in range(arguments.runs)]
            rss = statistics.median(run[0] for run in runs)
            ready = statistics.median(run[1] for run in runs)
            figures[precision] = rss - baseline
            print(f"{precision:>9} {rss / 2**20:17.1f} {(rss - baseline) / 2**20:13.1f} "
                  f"{figures[precision] / figures['f32']:7.3f} {ready:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
