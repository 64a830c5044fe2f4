#!/usr/bin/env python3
"""One MoE layer at decode in process: moemesh against numpy, same weights, same machine, same hour.

    .venv/bin/python scripts/bench_numpy_layer.py [--moemesh .build/release/moemesh] [--tokens 1] [--seconds 3]
        [--rounds 3] [--precision f32]

Synthesises the layer `moemesh bench` uses (Mixtral layout, 8 experts, top-2, H = 1024, I = 2816, f32 weights), then
alternates, `--rounds` times: numpy computing the layer from the safetensors file (softmax gate, top-k renormalised,
per chosen expert `(silu(x W1ᵀ) ⊙ x W3ᵀ) W2ᵀ` with W1 and W3 stacked into one product, weighted sum), and
`moemesh kernels layer` on the same folder. Both call the layer back to back on 64 fixed random inputs (rows uniform in
±1.7) so that the chosen experts vary and the weights come from memory. Prints each round's p50 and the ratio
moemesh ÷ numpy; numpy uses its own OpenBLAS with one thread per core, as moemesh does.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_safetensors(path: str) -> dict:
    """Every f32 tensor of a safetensors file, as numpy arrays (the format: u64 header length, JSON header, data)."""
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(length))
        data = file.read()
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["dtype"] != "F32":
            raise SystemExit(f"{name}: expected F32 weights (synthesised with --dtype f32), got {entry['dtype']}")
        begin, end = entry["data_offsets"]
        tensors[name] = np.frombuffer(data[begin:end], dtype=np.float32).reshape(entry["shape"])
    return tensors


class NumpyLayer:
    """A Mixtral sparse MoE block in numpy."""

    def __init__(self, tensors: dict, top_k: int):
        prefix = "model.layers.0.block_sparse_moe."
        self.gate = np.ascontiguousarray(tensors[prefix + "gate.weight"])
        count = self.gate.shape[0]
        expert = prefix + "experts.{}.{}.weight"
        self.gate_up = [np.ascontiguousarray(np.concatenate([tensors[expert.format(e, "w1")],
                                                              tensors[expert.format(e, "w3")]]))
                        for e in range(count)]
        self.down = [np.ascontiguousarray(tensors[expert.format(e, "w2")]) for e in range(count)]
        self.intermediate = self.down[0].shape[1]
        self.top_k = top_k

    def __call__(self, x: np.ndarray) -> np.ndarray:
        logits = x @ self.gate.T
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        chosen = np.argsort(-probabilities, axis=1, kind="stable")[:, :self.top_k]
        weights = np.take_along_axis(probabilities, chosen, axis=1)
        weights /= weights.sum(axis=1, keepdims=True)
        out = np.zeros_like(x)
        for expert in np.unique(chosen):
            rows, slot = np.nonzero(chosen == expert)
            projected = x[rows] @ self.gate_up[expert].T
            gate, up = projected[:, :self.intermediate], projected[:, self.intermediate:]
            hidden = gate / (1 + np.exp(-gate)) * up
            out[rows] += weights[rows, slot][:, None] * (hidden @ self.down[expert].T)
        return out


def time_numpy(layer: NumpyLayer, hidden: int, tokens: int, seconds: float) -> float:
    """p50 µs of the layer called back to back over `seconds` on 64 fixed inputs."""
    rng = np.random.default_rng(100)
    inputs = [rng.uniform(-1.7, 1.7, size=(tokens, hidden)).astype(np.float32) for _ in range(64)]
    for x in inputs[:3]:
        layer(x)
    samples = []
    deadline = time.perf_counter() + seconds
    index = 0
    while time.perf_counter() < deadline or len(samples) < 10:
        x = inputs[index % len(inputs)]
        index += 1
        started = time.perf_counter_ns()
        layer(x)
        samples.append((time.perf_counter_ns() - started) / 1e3)
    return float(np.median(samples))


def time_moemesh(binary: str, model: str, tokens: int, seconds: float, precision: str) -> float:
    output = subprocess.run(
        [binary, "kernels", "layer", "--model", model, "--tokens", str(tokens), "--seconds", str(seconds),
         "--precision", precision, "--json"], check=True, capture_output=True, text=True).stdout
    return float(json.loads(output.strip().splitlines()[-1])["p50_us"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--moemesh", default=os.path.join(ROOT, ".build", "release", "moemesh"))
    parser.add_argument("--tokens", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="f32", help="moemesh's weight storage (numpy computes in f32)")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="moemesh-numpy-layer-") as model:
        subprocess.run([arguments.moemesh, "synth", "--out", model, "--layers", "1", "--experts", "8", "--top-k", "2",
                        "--hidden", "1024", "--intermediate", "2816", "--dtype", "f32"], check=True,
                       capture_output=True)
        with open(os.path.join(model, "config.json")) as file:
            config = json.load(file)
        layer = NumpyLayer(read_safetensors(os.path.join(model, "model.safetensors")), config["num_experts_per_tok"])
        print(f"numpy {np.__version__}; layer H={config['hidden_size']} I={config['intermediate_size']}, "
              f"{config['num_local_experts']} experts, top-{layer.top_k}; T = {arguments.tokens}; "
              f"moemesh weights {arguments.precision}; {os.cpu_count()} cores")
        print("round   numpy p50 µs   moemesh p50 µs   moemesh ÷ numpy")
        ratios = []
        for round_index in range(arguments.rounds):
            numpy_p50 = time_numpy(layer, config["hidden_size"], arguments.tokens, arguments.seconds)
            moemesh_p50 = time_moemesh(arguments.moemesh, model, arguments.tokens, arguments.seconds,
                                       arguments.precision)
            ratios.append(moemesh_p50 / numpy_p50)
            print(f"{round_index + 1:5d} {numpy_p50:14.1f} {moemesh_p50:16.1f} {ratios[-1]:17.2f}", flush=True)
        print(f"median ratio {float(np.median(ratios)):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
