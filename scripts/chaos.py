#!/usr/bin/env python3
"""Faults under load: a mesh with 2 replicas per expert serving concurrent clients while replicas hang, die, the
coordinator goes away, or a host is cut off the network. Prints, per phase: requests, lost (any error), wrong (output
off the numpy reference by more than 1e-4 relative), throughput, p50 and p99 latency.

    scripts/chaos.py [--scenario processes|partition] [--moemesh .build/release/moemesh] [--clients 4] [--phase-s 8]
                     [--deadline-s 5] [--json]

Scenario `processes` (everything on 127.0.0.1): healthy; one replica hung (SIGSTOP for --phase-s, then SIGCONT);
after; one replica killed (kill -9; the coordinator starts a replacement); after; the coordinator killed (routers
serve with their last topology) and restarted on the same port; after.

Scenario `partition` (root: builds two hosts with network namespaces): host A and host B each run two expert
processes, experts 0-3 and 4-7 (2 replicas per expert, one per host; two per host so that either host alone can use
every core of this machine, which the hosts share); coordinator, router and clients run in the root
namespace, reached over a veth pair per host. Phases: healthy; host A cut off (its link down for --phase-s, no reset
sent: its connections go silent); after the link is back (host A's replica registers again and serves). The
namespaces and links are removed at the end.

Needs grpcio, grpcio-tools and numpy.
"""
import argparse
import atexit
import json
import os
import shutil
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
    atexit.register(shutil.rmtree, out, ignore_errors=True)
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

    def record(self, latency, lost, wrong, error=None):
        with self.lock:
            row = self.rows.setdefault(self.phase, {"latencies": [], "lost": 0, "wrong": 0, "start": time.monotonic()})
            row["latencies"].append(latency)
            row["lost"] += lost
            row["wrong"] += wrong
            if error is not None:
                row.setdefault("errors", {}).setdefault(error, 0)
                row["errors"][error] += 1

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


class Load:
    """Concurrent clients calling Forward on the router, each answer checked against the reference."""

    def __init__(self, stubs, router_endpoint, reference, clients, deadline_s):
        router_pb2, router_pb2_grpc, tensor_pb2 = stubs
        self.tally, self.stop = Tally(), threading.Event()
        rng = np.random.default_rng(0)
        inputs = [rng.standard_normal((1, 256)).astype(np.float32) for _ in range(64)]
        expected = [reference(x) for x in inputs]

        def client(index):
            stub = router_pb2_grpc.RouterStub(grpc.insecure_channel(router_endpoint))
            call = 0
            while not self.stop.is_set():
                i = (index * 17 + call) % len(inputs)
                call += 1
                x = inputs[i]
                started = time.monotonic()
                try:
                    reply = stub.Forward(router_pb2.ForwardRequest(layer="0", hidden_states=tensor_pb2.Tensor(
                        dtype=tensor_pb2.DTYPE_F32, shape=x.shape, data=x.tobytes())), timeout=deadline_s)
                    y = np.frombuffer(reply.output.data, np.float32).reshape(x.shape).astype(np.float64)
                    wrong = np.linalg.norm(y - expected[i]) > 1e-4 * np.linalg.norm(expected[i])
                    self.tally.record(time.monotonic() - started, 0, int(wrong))
                except grpc.RpcError as error:
                    self.tally.record(time.monotonic() - started, 1, 0, f"{error.code().name}: {error.details()}")

        self.threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]

    def start(self, phase, warm_up_s=3):
        """Starts the clients; what they do in the first `warm_up_s` (connections, learnt hedge delays) is not counted."""
        self.tally.enter("warm-up")
        for thread in self.threads:
            thread.start()
        time.sleep(warm_up_s)
        self.tally.enter(phase)

    def finish(self):
        """Stops the clients; returns one row per phase."""
        self.stop.set()
        for thread in self.threads:
            thread.join()
        self.tally.enter("end")
        rows = []
        for name, row in self.tally.rows.items():
            if name in ("start", "warm-up", "end"):
                continue
            latencies = sorted(row["latencies"])
            seconds = row["end"] - row["start"]
            pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3 if latencies else 0
            rows.append({"phase": name, "requests": len(latencies), "lost": row["lost"], "wrong": row["wrong"],
                         "requests_per_s": round(len(latencies) / seconds, 1), "p50_ms": round(pick(0.5), 2),
                         "p99_ms": round(pick(0.99), 2), "errors": row.get("errors", {})})
        healthy = rows[0]["requests_per_s"] or 1
        for row in rows:
            row["throughput_vs_healthy"] = round(row["requests_per_s"] / healthy, 3)
        return rows


def synthesise(moemesh):
    work = tempfile.mkdtemp(prefix="moemesh-chaos-")
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    model = os.path.join(work, "model")
    subprocess.run([moemesh, "synth", "--out", model, "--experts", "8", "--top-k", "2", "--hidden", "256",
                    "--intermediate", "512", "--layers", "1"], check=True, stdout=subprocess.DEVNULL)
    return model, mixtral_layer(read_safetensors(os.path.join(model, "model.safetensors")), 0, 2)


def wait_for_replicas(moemesh, coordinator_endpoint, count, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while not (s := status(moemesh, coordinator_endpoint)) or len(s.get("replicas", [])) < count:
        if time.monotonic() > deadline:
            sys.exit(f"fewer than {count} replicas registered after {timeout_s} s")
        time.sleep(0.2)
    return s


def stop_all(processes):
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


TIMING = ["--heartbeat-ms", "500", "--lease-ms", "3000"]


def processes_scenario(args, stubs):
    model, reference = synthesise(args.moemesh)
    port = free_port()
    coordinator_args = [args.moemesh, "coordinator", "--model", model, "--port", str(port), "--scaler", "local",
                        "--replicas", "2", "--threads", "1", "--log-level", "error"] + TIMING
    coordinator, coordinator_endpoint = start(coordinator_args, "coordinator")
    router, router_endpoint = start([args.moemesh, "router", "--model", model, "--port", "0", "--coordinator",
                                     coordinator_endpoint, "--log-level", "error"], "router")
    processes = [coordinator, router]
    try:
        wait_for_replicas(args.moemesh, coordinator_endpoint, 16)
        load = Load(stubs, router_endpoint, reference, args.clients, args.deadline_s)
        load.start("healthy")
        time.sleep(args.phase_s)

        replicas = sorted(status(args.moemesh, coordinator_endpoint)["replicas"], key=lambda r: r["group"])
        hung = int(replicas[0]["instance"])
        load.tally.enter("one replica hung (SIGSTOP)")
        os.kill(hung, signal.SIGSTOP)
        time.sleep(args.phase_s)
        os.kill(hung, signal.SIGCONT)
        load.tally.enter("after SIGCONT")
        time.sleep(args.phase_s)

        victim = int(replicas[2]["instance"])
        load.tally.enter("one replica killed (kill -9)")
        os.kill(victim, signal.SIGKILL)
        time.sleep(args.phase_s)
        load.tally.enter("after kill -9")
        time.sleep(args.phase_s)

        load.tally.enter("coordinator killed")
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait()
        time.sleep(args.phase_s / 2)
        coordinator, _ = start(coordinator_args, "coordinator")
        processes.append(coordinator)
        time.sleep(args.phase_s / 2)
        load.tally.enter("after the coordinator's restart")
        time.sleep(args.phase_s)
        return load.finish(), {}
    finally:
        stop_all(processes)


class Hosts:
    """Hosts on this machine: network namespace `moemesh-NAME` per host, linked to the root namespace by a veth pair
    (`mm-NAME` outside, 10.77.N.1; `mm-NAME-in` inside, 10.77.N.2)."""

    def __init__(self, names):
        self.names = names
        self.remove()
        for n, name in enumerate(names, start=1):
            outside, inside, namespace = f"mm-{name}", f"mm-{name}-in", f"moemesh-{name}"
            for command in (f"netns add {namespace}", f"link add {outside} type veth peer name {inside}",
                            f"link set {inside} netns {namespace}", f"addr add 10.77.{n}.1/24 dev {outside}",
                            f"link set {outside} up", f"-n {namespace} addr add 10.77.{n}.2/24 dev {inside}",
                            f"-n {namespace} link set {inside} up", f"-n {namespace} link set lo up"):
                subprocess.run(["ip"] + command.split(), check=True)

    def address(self, name):
        return f"10.77.{self.names.index(name) + 1}.2"

    def gateway(self, name):
        return f"10.77.{self.names.index(name) + 1}.1"

    def run(self, name, arguments):
        return ["ip", "netns", "exec", f"moemesh-{name}"] + arguments

    def link(self, name, up):
        subprocess.run(["ip", "link", "set", f"mm-{name}", "up" if up else "down"], check=True)

    def remove(self):
        for name in self.names:
            subprocess.run(["ip", "link", "del", f"mm-{name}"], stderr=subprocess.DEVNULL)
            subprocess.run(["ip", "netns", "del", f"moemesh-{name}"], stderr=subprocess.DEVNULL)


def partition_scenario(args, stubs):
    if os.geteuid() != 0:
        sys.exit("--scenario partition builds network namespaces: run it as root")
    model, reference = synthesise(args.moemesh)
    hosts = Hosts(["a", "b"])
    processes = []
    try:
        port = free_port()
        coordinator, coordinator_endpoint = start(
            [args.moemesh, "coordinator", "--model", model, "--host", "0.0.0.0", "--port", str(port), "--insecure",
             "--scaler", "none",
             "--log-level", "error"] + TIMING, "coordinator")
        processes.append(coordinator)
        local_coordinator = f"127.0.0.1:{port}"
        for name in hosts.names:
            for experts, expert_port in (("*:0-3", 50061), ("*:4-7", 50062)):
                expert, _ = start(hosts.run(name, [
                    args.moemesh, "expert", "--model", model, "--experts", experts, "--threads", "1", "--host",
                    hosts.address(name), "--port", str(expert_port), "--coordinator", f"{hosts.gateway(name)}:{port}",
                    "--log-level", "error"]), "expert")
                processes.append(expert)
        router, router_endpoint = start([args.moemesh, "router", "--model", model, "--port", "0", "--coordinator",
                                         local_coordinator, "--log-level", "error"], "router")
        processes.append(router)
        wait_for_replicas(args.moemesh, local_coordinator, 4)

        load = Load(stubs, router_endpoint, reference, args.clients, args.deadline_s)
        load.start("healthy")
        time.sleep(args.phase_s)
        load.tally.enter("host A cut off (link down)")
        hosts.link("a", up=False)
        time.sleep(args.phase_s)
        hosts.link("a", up=True)
        restored = time.monotonic()
        load.tally.enter("after the link is back")
        rejoined = None
        deadline = restored + max(args.phase_s, 15)
        while time.monotonic() < deadline:
            replicas = (status(args.moemesh, local_coordinator) or {}).get("replicas", [])
            if sum(r["endpoint"].startswith(hosts.address("a") + ":") and r["state"] == "serving" for r in replicas) == 2:
                rejoined = time.monotonic() - restored
                break
            time.sleep(0.1)
        time.sleep(max(0, args.phase_s - (time.monotonic() - restored)))
        rows = load.finish()
        return rows, {"host_a_rejoined_after_s": None if rejoined is None else round(rejoined, 2)}
    finally:
        stop_all(processes)
        hosts.remove()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=["processes", "partition"], default="processes")
    parser.add_argument("--moemesh", default=os.path.join(ROOT, ".build", "release", "moemesh"))
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--phase-s", type=float, default=8)
    parser.add_argument("--deadline-s", type=float, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    stubs = load_stubs()
    rows, notes = (partition_scenario if args.scenario == "partition" else processes_scenario)(args, stubs)
    if args.json:
        print(json.dumps({"phases": rows, **notes}))
        return
    print(f"{'phase':34} {'requests':>8} {'lost':>5} {'wrong':>5} {'req/s':>8} {'vs healthy':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for row in rows:
        print(f"{row['phase']:34} {row['requests']:>8} {row['lost']:>5} {row['wrong']:>5} {row['requests_per_s']:>8} "
              f"{row['throughput_vs_healthy']:>10} {row['p50_ms']:>8} {row['p99_ms']:>8}")
    for row in rows:
        for error, count in row["errors"].items():
            print(f"lost in '{row['phase']}': {count} × {error}")
    for key, value in notes.items():
        print(f"{key.replace('_', ' ')}: {value}")


if __name__ == "__main__":
    main()
