"""Greedy generation with a Hugging Face model whose experts run on a mesh:

    python -m moemesh.generate --model DIR --router HOST:PORT --prompt-ids 1,2,3 --max-new-tokens 16
    python -m moemesh.generate --model DIR --local --prompt-ids 1,2,3     # the same model, experts in this process

Prints the tokens, tokens per second, and the time spent in mesh calls per token (and per layer per token).
With --json, one object instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional, cast

import torch
import transformers

import moemesh
import moemesh.transformers


def load(folder: str, dtype: str) -> transformers.PreTrainedModel:
    config = transformers.AutoConfig.from_pretrained(folder)
    cls = (transformers.AutoModelForSeq2SeqLM if config.is_encoder_decoder else transformers.AutoModelForCausalLM)
    model: transformers.PreTrainedModel = cls.from_pretrained(folder, dtype=getattr(torch, dtype))
    model.train(False)  # eval mode (transformers leaves its `eval` override untyped)
    return model


def run(model: transformers.PreTrainedModel, prompt: list[int], new_tokens: int) -> tuple[list[int], float]:
    extra: dict[str, int] = {}
    if model.config.is_encoder_decoder:
        extra["decoder_start_token_id"] = model.config.decoder_start_token_id or 0
    started = time.perf_counter()
    with torch.no_grad():
        out = cast(transformers.GenerationMixin, model).generate(
            torch.tensor([prompt]), max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
            pad_token_id=model.config.pad_token_id or 0, **extra)
    seconds = time.perf_counter() - started
    tokens = out[0].tolist()
    return (tokens if model.config.is_encoder_decoder else tokens[len(prompt):]), seconds


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m moemesh.generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the Hugging Face model folder (config.json, safetensors)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--router", help="the mesh's router, HOST:PORT, serving the same model")
    where.add_argument("--local", action="store_true", help="run the experts in this process (for comparison)")
    parser.add_argument("--prompt-ids", required=True, help="token ids of the prompt, comma-separated")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--token", help="bearer token for the router (or the MOEMESH_TOKEN variable)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="each mesh call's deadline, in seconds (default 60)")
    parser.add_argument("--tls-ca", help="CA (PEM) that verifies the router: TLS instead of plaintext")
    parser.add_argument("--tls-cert", help="this client's certificate (PEM), for a router that requires mutual TLS")
    parser.add_argument("--tls-key", help="the private key (PEM) of --tls-cert")
    parser.add_argument("--wait-for-ready", action="store_true",
                        help="calls made while the router cannot be reached wait for it (within --timeout)")
    parser.add_argument("--no-verify", action="store_true",
                        help="attach even if the mesh serves another model than --model (type, size, experts or "
                             "gate weights differ); by default that is refused")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        prompt = [int(value) for value in args.prompt_ids.split(",") if value.strip()]
    except ValueError:
        parser.error(f"--prompt-ids: expected comma-separated integers, got {args.prompt_ids!r}")
    if not prompt:
        parser.error("--prompt-ids: expected at least one token id")
    if args.timeout <= 0:
        parser.error(f"--timeout: expected a positive number of seconds, got {args.timeout}")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key: give both (mutual TLS), or neither")
    tls = None
    if args.tls_ca or args.tls_cert:
        tls = moemesh.TLS(ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key)
    token = args.token or os.environ.get("MOEMESH_TOKEN")

    model = load(args.model, args.dtype)
    client = None
    timing = None
    try:
        if args.router:
            client = moemesh.Client(
                args.router, token=token, tls=tls, timeout=args.timeout, wait_for_ready=args.wait_for_ready)
            timing = moemesh.transformers.attach(model, client, verify=not args.no_verify)
        for _ in range(args.warmup):
            run(model, prompt, args.max_new_tokens)
        if timing is not None:
            timing.reset()
        tokens, seconds = run(model, prompt, args.max_new_tokens)
    except (moemesh.MoEMeshError, moemesh.transformers.ModelMismatch) as error:
        print(f"moemesh.generate: {error}", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            client.close()

    steps = max(1, args.max_new_tokens)
    report = {
        "tokens": tokens, "new_tokens": args.max_new_tokens, "seconds": seconds,
        "tokens_per_second": args.max_new_tokens / seconds if seconds > 0 else 0.0,
        "where": "mesh" if args.router else "local",
    }
    if timing is not None:
        layers = max(1, len(timing.per_layer))
        report["mesh_calls"] = timing.calls
        report["mesh_ms_per_token"] = timing.seconds * 1000 / steps
        report["mesh_ms_per_layer_per_token"] = timing.seconds * 1000 / steps / layers
    if args.json:
        print(json.dumps(report))
    else:
        print("tokens:", ",".join(map(str, tokens)))
        line = f"{report['tokens_per_second']:.1f} tokens/s ({args.max_new_tokens} tokens in {seconds:.3f} s, {report['where']})"
        if timing is not None:
            line += (f"; mesh calls {report['mesh_ms_per_token']:.2f} ms per token, "
                     f"{report['mesh_ms_per_layer_per_token']:.2f} ms per layer per token")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
