#!/usr/bin/env python3
"""Faults under load: a mesh with 2 replicas per expert serving concurrent clients while replicas hang, die and the
coordinator goes away. Prints, per phase: requests, lost (any error), wrong (output off the numpy reference by more
than 1e-4 relative), throughput, p50 and p99 latency.

    scripts/chaos.py [--moemesh .build/release/moemesh] [--clients 4] [--phase-s 8] [--deadline-s 5] [--json]

Phases: healthy; one replica hung (SIGSTOP for --phase-s, then SIGCONT); after; one replica killed (kill -9; the
coordinator starts a replacement); after; the coordinator killed (routers serve with their last topology) and
restarted on the same port; after. Needs grpcio, grpcio-tools and numpy; runs everything on 127.0.0.1.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import numpy as np
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_stubs():
    out = tempfile.mkdtemp(prefix="moemesh-chaos-")
    files = [os.path.join("moemesh", "v1", name) for name in ("tensor.proto", "router.proto")]
    if protoc.main(["protoc", f"-I{os.path.join(ROOT, 'Protos')}", f"--python_out={out}", f"--grpc_python_out={out}", *files]):
        sys.exit("could not generate the Python stubs from Protos/")
    sys.path.insert(0, out)
    from moemesh.v1 import router_pb2, router_pb2_grpc, tensor_pb2
    return router_pb2, router_pb2_grpc, tensor_pb2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_safetensors(path):
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        data = f.read()
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        assert entry["dtype"] == "F32", "the chaos model is f32"
        tensors[name] = np.frombuffer(data[start:end], np.float32).reshape(entry["shape"])
    return tensors


def mixtral_layer(tensors, layer, top_k):
    """The layer in float64: softmax gate, top-k renormalised, SwiGLU experts (shared/ROUTING.md)."""
    prefix = f"model.layers.{layer}.block_sparse_moe."
    gate = tensors[prefix + "gate.weight"].astype(np.float64)
    experts = [(tensors[prefix + f"experts.{e}.w1.weight"].astype(np.float64),
                tensors[prefix + f"experts.{e}.w3.weight"].astype(np.float64),
                tensors[prefix + f"experts.{e}.w2.weight"].astype(np.float64)) for e in range(gate.shape[0])]

    def forward(x):
        x = x.astype(np.float64)
        logits = x @ gate.T
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out = np.zeros_like(x)
        for t in range(x.shape[0]):
            chosen = np.argsort(-p[t], kind="stable")[:top_k]
            weights = p[t, chosen] / p[t, chosen].sum()
            for w, e in zip(weights, chosen):
                w1, w3, w2 = experts[e]
                a, b = w1 @ x[t], w3 @ x[t]
                out[t] += w * (w2 @ (a / (1 + np.exp(-a)) * b))
        return out
    return forward


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.phase = "start"
        self.rows = {}

    def record(self, latency, lost, wrong):
        with self.lock:
            row = self.rows.setdefault(self.phase, {"latencies": [], "lost": 0, "wrong": 0, "start": time.monotonic()})
            row["latencies"].append(latency)
            row["lost"] += lost
            row["wrong"] += wrong

    def enter(self, phase):
        with self.lock:
            self.phase = phase
            self.rows.setdefault(phase, {"latencies": [], "lost": 0, "wrong": 0, "start": time.monotonic()})
            for name, row in self.rows.items():
                if name != phase and "end" not in row:
                    row["end"] = time.monotonic()


def start(arguments, ready_role):
    process = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:
        if line.startswith(f"{ready_role} listening on "):
            return process, line.split()[-1]
    sys.exit(f"{arguments[1]} did not start")


def status(moemesh, coordinator):
    out = subprocess.run([moemesh, "status", "--coordinator", coordinator, "--json"], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moemesh", default=os.path.join(ROOT, ".build", "release", "moemesh"))
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--phase-s", type=float, default=8)
    parser.add_argument("--deadline-s", type=float, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    router_pb2, router_pb2_grpc, tensor_pb2 = load_stubs()

    work = tempfile.mkdtemp(prefix="moemesh-chaos-")
    model = os.path.join(work, "model")
    subprocess.run([args.moemesh, "synth", "--out", model, "--experts", "8", "--top-k", "2", "--hidden", "256",
                    "--intermediate", "512", "--layers", "1"], check=True, stdout=subprocess.DEVNULL)
    reference = mixtral_layer(read_safetensors(os.path.join(model, "model.safetensors")), 0, 2)

    port = free_port()
    timing = ["--heartbeat-ms", "500", "--lease-ms", "3000"]
    coordinator_args = [args.moemesh, "coordinator", "--model", model, "--port", str(port), "--scaler", "local",
                        "--replicas", "2", "--threads", "1", "--log-level", "error"] + timing
    coordinator, coordinator_endpoint = start(coordinator_args, "coordinator")
    router, router_endpoint = start([args.moemesh, "router", "--model", model, "--port", "0", "--coordinator",
                                     coordinator_endpoint, "--log-level", "error"], "router")
    processes = [coordinator, router]
    while not (s := status(args.moemesh, coordinator_endpoint)) or len(s.get("replicas", [])) < 16:
        time.sleep(0.2)

    tally, stop = Tally(), threading.Event()
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, 256)).astype(np.float32) for _ in range(64)]
    expected = [reference(x) for x in inputs]

    def client(index):
        stub = router_pb2_grpc.RouterStub(grpc.insecure_channel(router_endpoint))
        call = 0
        while not stop.is_set():
            i = (index * 17 + call) % len(inputs)
            call += 1
            x = inputs[i]
            started = time.monotonic()
            try:
                reply = stub.Forward(router_pb2.ForwardRequest(layer="0", hidden_states=tensor_pb2.Tensor(
                    dtype=tensor_pb2.DTYPE_F32, shape=x.shape, data=x.tobytes())), timeout=args.deadline_s)
                y = np.frombuffer(reply.output.data, np.float32).reshape(x.shape).astype(np.float64)
                wrong = np.linalg.norm(y - expected[i]) > 1e-4 * np.linalg.norm(expected[i])
                tally.record(time.monotonic() - started, 0, int(wrong))
            except grpc.RpcError:
                tally.record(time.monotonic() - started, 1, 0)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    tally.enter("healthy")
    for thread in threads:
        thread.start()
    time.sleep(args.phase_s)

    replicas = sorted(status(args.moemesh, coordinator_endpoint)["replicas"], key=lambda r: r["group"])
    hung = int(replicas[0]["instance"])
    tally.enter("one replica hung (SIGSTOP)")
    os.kill(hung, signal.SIGSTOP)
    time.sleep(args.phase_s)
    os.kill(hung, signal.SIGCONT)
    tally.enter("after SIGCONT")
    time.sleep(args.phase_s)

    victim = int(replicas[2]["instance"])
    tally.enter("one replica killed (kill -9)")
    os.kill(victim, signal.SIGKILL)
    time.sleep(args.phase_s)
    tally.enter("after kill -9")
    time.sleep(args.phase_s)

    tally.enter("coordinator killed")
    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait()
    time.sleep(args.phase_s / 2)
    coordinator, _ = start(coordinator_args, "coordinator")
    processes.append(coordinator)
    time.sleep(args.phase_s / 2)
    tally.enter("after the coordinator's restart")
    time.sleep(args.phase_s)
    stop.set()
    for thread in threads:
        thread.join()
    tally.enter("end")

    rows = []
    for name, row in tally.rows.items():
        if name in ("start", "end"):
            continue
        latencies = sorted(row["latencies"])
        seconds = row["end"] - row["start"]
        pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3 if latencies else 0
        rows.append({"phase": name, "requests": len(latencies), "lost": row["lost"], "wrong": row["wrong"],
                     "requests_per_s": round(len(latencies) / seconds, 1), "p50_ms": round(pick(0.5), 2),
                     "p99_ms": round(pick(0.99), 2)})
    healthy = rows[0]["requests_per_s"] or 1
    for row in rows:
        row["throughput_vs_healthy"] = round(row["requests_per_s"] / healthy, 3)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'phase':34} {'requests':>8} {'lost':>5} {'wrong':>5} {'req/s':>8} {'vs healthy':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for row in rows:
        print(f"{row['phase']:34} {row['requests']:>8} {row['lost']:>5} {row['wrong']:>5} {row['requests_per_s']:>8} "
              f"{row['throughput_vs_healthy']:>10} {row['p50_ms']:>8} {row['p99_ms']:>8}")


if __name__ == "__main__":
    main()
