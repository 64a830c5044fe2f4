#!/usr/bin/env python3
"""Tokens per second of a Hugging Face model generating with its experts local vs on a mesh (`moemesh up`), and the
mesh's time per layer per token. Run with the virtual environment scripts/test.sh makes:

    .venv/bin/python scripts/bench_generate.py [--moemesh .build/release/moemesh] [--layers 4] [--tokens 64]

The model is a tiny random Mixtral made by transformers (clients/python/tests/make_tiny_models.py).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "clients", "python", "tests"))

import make_tiny_models  # noqa: E402
from conftest import serving  # noqa: E402


def generate(model: str, where: list, tokens: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "moemesh.generate", "--model", model, *where, "--prompt-ids", "1,5,9,3,7,2,11,4",
         "--max-new-tokens", str(tokens), "--json", "--warmup", "1"],
        capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moemesh", default=os.path.join(ROOT, ".build", "release", "moemesh"))
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        config = make_tiny_models.configs(args.layers)["mixtral"]
        model = make_tiny_models.write(folder, "mixtral", config, make_tiny_models.torch.float32)
        local = generate(model, ["--local"], args.tokens)
        with serving(args.moemesh, model) as router:
            mesh = generate(model, ["--router", router], args.tokens)
    assert mesh["tokens"] == local["tokens"], "the mesh generated other tokens than the local model"
    print(f"{args.layers}-layer Mixtral (tiny), {args.tokens} new tokens, greedy, batch 1:")
    print(f"  local: {local['tokens_per_second']:.1f} tokens/s")
    print(f"  mesh:  {mesh['tokens_per_second']:.1f} tokens/s "
          f"({mesh['tokens_per_second'] / local['tokens_per_second']:.2f}× local); mesh calls "
          f"{mesh['mesh_ms_per_token']:.2f} ms per token, {mesh['mesh_ms_per_layer_per_token']:.2f} ms per layer "
          f"per token; tokens identical")


if __name__ == "__main__":
    main()
