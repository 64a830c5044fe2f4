#!/usr/bin/env python3
"""Calls a MoEMesh router from Python: one Forward with random hidden states, printing the output and routing.

    pip install grpcio grpcio-tools numpy
    python3 examples/python/forward.py --router 127.0.0.1:50051 --layer 0 --tokens 7

The gRPC stubs are generated from Protos/ into a temporary folder on each run (grpc_tools.protoc).
"""
import argparse
import atexit
import os
import shutil
import sys
import tempfile

import grpc
import numpy as np
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_stubs():
    out = tempfile.mkdtemp(prefix="moemesh-py-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    protos = os.path.join(ROOT, "Protos")
    files = [os.path.join("moemesh", "v1", name) for name in ("tensor.proto", "router.proto")]
    if protoc.main(["protoc", f"-I{protos}", f"--python_out={out}", f"--grpc_python_out={out}", *files]) != 0:
        sys.exit("could not generate the Python stubs from Protos/")
    sys.path.insert(0, out)
    from moemesh.v1 import router_pb2, router_pb2_grpc, tensor_pb2
    return router_pb2, router_pb2_grpc, tensor_pb2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--router", default="127.0.0.1:50051")
    parser.add_argument("--layer", default="0")
    parser.add_argument("--tokens", type=int, default=7)
    parser.add_argument("--save", help="write hidden_states, output, topk_ids and topk_weights to this .safetensors file")
    parser.add_argument("--stream", type=int, metavar="N",
                        help="also send N requests over one ForwardStream (every MoE layer in turn, as a model runner "
                             "does) and check each answer against the unary Forward")
    args = parser.parse_args()
    router_pb2, router_pb2_grpc, tensor_pb2 = load_stubs()

    stub = router_pb2_grpc.RouterStub(grpc.insecure_channel(args.router))
    model = stub.DescribeModel(router_pb2.DescribeModelRequest())
    x = np.random.default_rng(0).standard_normal((args.tokens, model.hidden_size)).astype(np.float32)
    reply = stub.Forward(router_pb2.ForwardRequest(
        layer=args.layer, return_routing=True,
        hidden_states=tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_F32, shape=x.shape, data=x.tobytes())))
    y = np.frombuffer(reply.output.data, np.float32).reshape(tuple(reply.output.shape))
    k = reply.routing.top_k
    ids = np.array(reply.routing.topk_ids, np.int32).reshape(-1, k)
    weights = np.array(reply.routing.topk_weights, np.float32).reshape(-1, k)
    print(f"{model.model_type}: layer {args.layer}, {args.tokens} tokens, output {y.shape}, "
          f"|y| = {np.linalg.norm(y):.4f}, experts of token 0: {ids[0].tolist()} weights {[round(float(w), 4) for w in weights[0]]}")
    if args.save:
        save_safetensors(args.save, hidden_states=x, output=y, topk_ids=ids, topk_weights=weights)
    if args.stream:
        stream_layers(stub, model, router_pb2, tensor_pb2, args.stream)


def stream_layers(stub, model, router_pb2, tensor_pb2, count):
    """One long-lived ForwardStream: each request tagged with a request_id, each answer carries it back (answers may
    come out of order when several requests are in flight; a failed request gets `error` set, the stream goes on)."""
    rng = np.random.default_rng(1)
    layers = [layer.name for layer in model.layers]
    requests = {}
    for request_id in range(1, count + 1):
        x = rng.standard_normal((3, model.hidden_size)).astype(np.float32)
        requests[request_id] = router_pb2.ForwardRequest(
            layer=layers[request_id % len(layers)], request_id=request_id, return_routing=True, timeout_ms=10_000,
            hidden_states=tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_F32, shape=x.shape, data=x.tobytes()))
    matched = 0
    for answer in stub.ForwardStream(iter(requests.values())):
        if answer.HasField("error"):
            sys.exit(f"request {answer.request_id} failed: {answer.error.code} {answer.error.message}")
        unary = stub.Forward(requests[answer.request_id])
        if list(answer.routing.topk_ids) != list(unary.routing.topk_ids):
            sys.exit(f"request {answer.request_id}: streamed routing differs from the unary one")
        a = np.frombuffer(answer.output.data, np.float32)
        b = np.frombuffer(unary.output.data, np.float32)
        if np.linalg.norm(a - b) > 1e-6 * max(np.linalg.norm(b), 1e-30):
            sys.exit(f"request {answer.request_id}: streamed output differs from the unary one")
        matched += 1
    print(f"stream: {matched} of {count} answers over one ForwardStream, each equal to the unary Forward")


def save_safetensors(path, **arrays):
    """The safetensors layout: u64 header length, JSON header, then the tensors' bytes in order."""
    import json
    import struct
    names = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32"}
    header, offset, blobs = {}, 0, []
    for name, array in arrays.items():
        blob = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


if __name__ == "__main__":
    main()
