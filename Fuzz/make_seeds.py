#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora from the golden fixtures (Tests/Fixtures/golden):

    python3 Fuzz/make_seeds.py OUT        # OUT/<FuzzTarget>/<seed>

FuzzSafeTensors: every safetensors file and shard index; FuzzModelConfig: every config.json; FuzzWireTensor: the
reference hidden states as wire tensors (f32, bf16, f16; 2-D and 3-D); FuzzForwardRequest: Forward requests for the
Qwen2-MoE fixture's layers (with and without token ids and a noise seed), each prefixed by the byte that picks the
routing policy. Needs numpy and protobuf; the messages come from the Python client's generated stubs.
"""
import glob
import json
import os
import struct
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "Tests", "Fixtures", "golden")
sys.path.insert(0, os.path.join(ROOT, "clients", "python", "src"))
from moemesh.v1 import router_pb2, tensor_pb2  # noqa: E402

POLICIES = 7  # FuzzForwardRequest's routing policies, picked by the first byte


def read_safetensors(path):
    """name → float32 array, for the f32 tensors of a safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + length])
    data = blob[8 + length :]
    arrays = {}
    for name, entry in header.items():
        if name == "__metadata__" or entry["dtype"] != "F32":
            continue
        begin, end = entry["data_offsets"]
        arrays[name] = np.frombuffer(data[begin:end], np.float32).reshape(entry["shape"])
    return arrays


def wire_tensor(array, dtype):
    tensor = tensor_pb2.Tensor(shape=list(array.shape))
    if dtype == "f32":
        tensor.dtype = tensor_pb2.DTYPE_F32
        tensor.data = array.astype("<f4").tobytes()
    elif dtype == "f16":
        tensor.dtype = tensor_pb2.DTYPE_F16
        tensor.data = array.astype("<f2").tobytes()
    else:
        bits = array.astype(np.float32).view(np.uint32).astype(np.uint64)
        tensor.dtype = tensor_pb2.DTYPE_BF16
        tensor.data = (((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")).tobytes()
    return tensor


def write(folder, name, blob):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(blob)


def main(out):
    for path in sorted(glob.glob(os.path.join(GOLDEN, "**", "*.safetensors*"), recursive=True)):
        if os.path.getsize(path) <= 40_000:
            write(os.path.join(out, "FuzzSafeTensors"), os.path.relpath(path, GOLDEN).replace("/", "_"), open(path, "rb").read())
    for path in sorted(glob.glob(os.path.join(GOLDEN, "*", "config.json"))):
        write(os.path.join(out, "FuzzModelConfig"), os.path.basename(os.path.dirname(path)), open(path, "rb").read())

    reference = read_safetensors(os.path.join(GOLDEN, "mixtral-f32.reference.safetensors"))
    for name, array in sorted(reference.items()):
        if not name.endswith("hidden_states"):
            continue
        for dtype in ("f32", "bf16", "f16"):
            seed = wire_tensor(array[:3], dtype)
            write(os.path.join(out, "FuzzWireTensor"), f"{name}-{dtype}", seed.SerializeToString())
            seed = wire_tensor(array[:4].reshape(2, 2, -1), dtype)
            write(os.path.join(out, "FuzzWireTensor"), f"{name}-{dtype}-3d", seed.SerializeToString())

    qwen = read_safetensors(os.path.join(GOLDEN, "qwen2_moe-f32.reference.safetensors"))
    for name, array in sorted(qwen.items()):
        if not name.endswith(".hidden_states"):
            continue
        layer = name.split(".")[0]
        tokens = array[:4]
        for policy in range(POLICIES):
            request = router_pb2.ForwardRequest(layer=layer, hidden_states=wire_tensor(tokens, "f32"))
            if policy % 2 == 0:
                request.token_ids.extend(range(100, 100 + len(tokens)))
                request.noise_seed = 11
            if policy == 3:  # expert choice routes whole sequences: [B, S, H]
                request.hidden_states.CopyFrom(wire_tensor(tokens.reshape(2, 2, -1), "bf16"))
            write(os.path.join(out, "FuzzForwardRequest"), f"{layer}-{policy}", bytes([policy]) + request.SerializeToString())


if __name__ == "__main__":
    main(sys.argv[1])
