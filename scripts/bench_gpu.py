#!/usr/bin/env python3
"""MoEMesh's CUDA expert kernel against PyTorch on the same GPU, in one run.

Both compute a Mixtral-size SwiGLU expert (default H=4096, I=14336) in bf16 with the rows already on the GPU:
PyTorch eager `(silu(x @ w1.T) * (x @ w3.T)) @ w2.T`, MoEMesh `moemesh kernels bench` (two cuBLASLt GEMMs, the
activation fused in one pass). Each side: median of 30 CUDA-event timings after warm-up; the two alternate twice
(MoEMesh, PyTorch, MoEMesh, PyTorch) and each keeps its better median. Prints a table and the ratio
PyTorch time / MoEMesh time (≥ 1: MoEMesh as fast or faster).

Usage: scripts/bench_gpu.py [--moemesh PATH] [--tokens 1,8,...] [--json FILE]
"""
import argparse
import json
import subprocess
import sys


def moemesh_medians(binary, hidden, intermediate, tokens):
    command = [binary, "kernels", "bench", "--device", "cuda", "--hidden", str(hidden), "--intermediate",
               str(intermediate), "--tokens", ",".join(map(str, tokens)), "--json"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return {row["tokens"]: row["median_ms"] for row in map(json.loads, output.splitlines()) if row}


def torch_medians(hidden, intermediate, tokens, repeats=30, warmup=5):
    import torch
    torch.manual_seed(0)
    device = "cuda"
    w1 = ((torch.rand(intermediate, hidden, device=device) * 2 - 1) / hidden ** 0.5).to(torch.bfloat16)
    w3 = ((torch.rand(intermediate, hidden, device=device) * 2 - 1) / hidden ** 0.5).to(torch.bfloat16)
    w2 = ((torch.rand(hidden, intermediate, device=device) * 2 - 1) / intermediate ** 0.5).to(torch.bfloat16)
    medians = {}
    with torch.inference_mode():
        for count in tokens:
            x = (torch.rand(count, hidden, device=device) * 2 - 1).to(torch.bfloat16)
            samples = []
            for run in range(warmup + repeats):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                (torch.nn.functional.silu(x @ w1.T) * (x @ w3.T)) @ w2.T
                end.record()
                end.synchronize()
                if run >= warmup:
                    samples.append(start.elapsed_time(end))
            samples.sort()
            medians[count] = samples[len(samples) // 2]
    return medians


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moemesh", default=".build/release/moemesh")
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=14336)
    parser.add_argument("--tokens", default="1,8,32,128,512,2048,8192")
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()
    tokens = [int(t) for t in args.tokens.split(",")]
    import torch
    print(f"GPU: {torch.cuda.get_device_name()}; PyTorch {torch.__version__}; "
          f"SwiGLU expert H={args.hidden} I={args.intermediate}, bf16", flush=True)
    runs = []
    for _ in range(2):
        runs.append(("moemesh", moemesh_medians(args.moemesh, args.hidden, args.intermediate, tokens)))
        runs.append(("torch", torch_medians(args.hidden, args.intermediate, tokens)))
    best = {name: {t: min(r[t] for n, r in runs if n == name) for t in tokens} for name in ("moemesh", "torch")}
    rows = []
    print(f"{'tokens':>6} {'PyTorch ms':>11} {'MoEMesh ms':>11} {'MoEMesh TFLOP/s':>16} {'speed vs PyTorch':>17}")
    for t in tokens:
        flops = 2 * t * 3 * args.hidden * args.intermediate
        ratio = best["torch"][t] / best["moemesh"][t]
        rows.append({"tokens": t, "torch_ms": best["torch"][t], "moemesh_ms": best["moemesh"][t], "ratio": ratio,
                     "runs": {name: [r[t] for n, r in runs if n == name] for name in ("moemesh", "torch")}})
        print(f"{t:>6} {best['torch'][t]:>11.4f} {best['moemesh'][t]:>11.4f} "
              f"{flops / best['moemesh'][t] / 1e9:>16.1f} {ratio:>16.3f}x")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)
    worst = min(row["ratio"] for row in rows)
    print(f"slowest ratio: {worst:.3f}x PyTorch's speed (goal ≥ 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
