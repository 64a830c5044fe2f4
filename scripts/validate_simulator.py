#!/usr/bin/env python3
"""The fleet simulator against a real mesh: `moemesh simulate`'s prediction next to what `moemesh up` measures.

    .venv/bin/python scripts/validate_simulator.py [--moemesh .build/release/moemesh] [--clients 1,2,4]
        [--tokens 16] [--seconds 5] [--zipf 1.2] [--batching off]

A real mesh on this machine (`moemesh up`: one expert process per expert of a synthetic 8-expert top-2 layer, a
router, the coordinator) serves a Zipf-skewed load: each request's tokens are drawn from a pool of tokens bucketed by
the expert the gate ranks first, the bucket by Zipf rank. Per client count it measures tokens/s and balancedness
(mean / max of the replicas' rows per second, from the coordinator's status) and the CPU seconds of the experts, the
router and this client.

The simulator's model is fitted from the 1-client run alone (and a second 1-client run with 4× the tokens, for the
per-row cost): one node with as many slots as this machine has cores; an expert call costs the experts' CPU per call
(`fixed + per row`, least squares over the two runs); each request's router and client CPU runs on the same node's
slots; the hop's latency is what remains of the 1-client latency. Routing is the coordinator's recorded demand and
co-activation (`moemesh simulate --status`). Then it predicts every client count, and the table shows the error.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "clients", "python", "src"))
import moemesh  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def descendants(pid: int) -> list:
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                children += [int(child) for child in listing.read().split()]
        except FileNotFoundError:
            pass
    return children + [grandchild for child in children for grandchild in descendants(child)]


def status(binary: str, coordinator: str) -> dict:
    return json.loads(subprocess.run([binary, "status", "--coordinator", coordinator, "--json"],
                                     check=True, capture_output=True, text=True).stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--moemesh", default=os.path.join(ROOT, ".build", "release", "moemesh"))
    parser.add_argument("--clients", default="1,2,4")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--zipf", type=float, default=1.2)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--intermediate", type=int, default=1024)
    parser.add_argument("--batching", default="off", choices=["on", "off"],
                        help="the router's dynamic batching (the simulator does not model it: off compares like "
                             "with like; on shows what batching adds under concurrency)")
    arguments = parser.parse_args()
    binary = arguments.moemesh
    cores = os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="moemesh-validate-") as folder:
        model = os.path.join(folder, "model")
        subprocess.run([binary, "synth", "--out", model, "--experts", "8", "--top-k", "2", "--hidden",
                        str(arguments.hidden), "--intermediate", str(arguments.intermediate), "--layers", "1"],
                       check=True, capture_output=True)
        up = subprocess.Popen([binary, "up", "--model", model, "--port", "0", "--coordinator-port", "0",
                               "--replicas", "1", "--threads", "1", "--log-level", "warning"],
                              stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, MOEMESH_BATCHING=arguments.batching))
        endpoints = {}
        try:
            for line in up.stdout:
                for role in ("coordinator", "router"):
                    if line.startswith(f"{role} listening on"):
                        endpoints[role] = line.split()[3]
                if len(endpoints) == 2:
                    break
            results = measure_and_predict(binary, up.pid, endpoints, arguments, cores, folder)
        finally:
            up.terminate()
            up.wait(timeout=60)
    print(f"validation: `moemesh up` (8 experts, top-2, H={arguments.hidden}, I={arguments.intermediate}, "
          f"{arguments.tokens} tokens/request, Zipf {arguments.zipf}, router batching {arguments.batching}) on {cores} "
          "cores vs `moemesh simulate`")
    print("clients  measured tok/s  predicted tok/s  error   measured bal  predicted bal  error  CPU ms/request")
    for row in results:
        print(f"{row['clients']:>7}  {row['measured']:>14.0f}  {row['predicted']:>15.0f}  "
              f"{100 * (row['predicted'] / row['measured'] - 1):>+5.1f}%  {row['measured_bal']:>12.3f}  "
              f"{row['predicted_bal']:>13.3f}  {100 * (row['predicted_bal'] / row['measured_bal'] - 1):>+5.1f}%  "
              f"{row['cpu_ms_per_request']:>14.2f}")
    print(json.dumps(results))
    return 0


def measure_and_predict(binary, up_pid, endpoints, arguments, cores, folder):
    rng = np.random.default_rng(0)
    hidden = arguments.hidden
    # A pool of tokens by the expert the gate ranks first.
    buckets = {expert: [] for expert in range(8)}
    with moemesh.Client(endpoints["router"]) as client:
        for _ in range(40):
            x = rng.standard_normal((256, hidden)).astype(np.float32)
            result = client.forward("0", x, return_routing=True)
            for row, chosen in zip(x, result.routing.ids):
                buckets[int(chosen[0])].append(row)
    weights = np.array([1 / (rank + 1) ** arguments.zipf for rank in range(8)])
    weights /= weights.sum()

    def request(generator, tokens):
        experts = generator.choice(8, size=tokens, p=weights)
        return np.stack([buckets[e][generator.integers(len(buckets[e]))] for e in experts])

    def run(clients, tokens, seconds):
        stop = threading.Event()
        counts = [0] * clients
        latencies = []
        lock = threading.Lock()

        def drive(worker):
            generator = np.random.default_rng(1000 + worker)
            with moemesh.Client(endpoints["router"]) as client:
                while not stop.is_set():
                    x = request(generator, tokens)
                    started = time.monotonic()
                    client.forward("0", x)
                    with lock:
                        latencies.append(time.monotonic() - started)
                    counts[worker] += 1

        experts = [int(replica["instance"]) for replica in status(binary, endpoints["coordinator"])["replicas"]]
        tree = [up_pid] + descendants(up_pid)
        threads = [threading.Thread(target=drive, args=(worker,)) for worker in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(1)  # warm-up
        before = sum(counts)
        cpu_experts, cpu_tree, cpu_client = sum(map(cpu_seconds, experts)), sum(map(cpu_seconds, tree)), time.process_time()
        started = time.monotonic()
        balance = []
        while time.monotonic() - started < seconds:
            time.sleep(1)
            replicas = status(binary, endpoints["coordinator"])["replicas"]
            rates = [replica["rows_per_second"] for replica in replicas]
            if max(rates) > 0:
                balance.append(sum(rates) / len(rates) / max(rates))
        elapsed = time.monotonic() - started
        requests = sum(counts) - before
        cpu = (sum(map(cpu_seconds, experts)) - cpu_experts, sum(map(cpu_seconds, tree)) - cpu_tree,
               time.process_time() - cpu_client)
        stop.set()
        for thread in threads:
            thread.join()
        return {"tokens_per_second": requests * tokens / elapsed, "requests": requests,
                "expert_cpu": cpu[0] / requests, "router_cpu": (cpu[1] - cpu[0] + cpu[2]) / requests,
                "latency": float(np.median(latencies[len(latencies) // 4:])),
                "balancedness": float(np.mean(balance)) if balance else 1.0}

    # Calls and rows per request under this routing, from the gate's own choices on sampled requests.
    def calls_and_rows(tokens):
        generator = np.random.default_rng(7)
        calls = rows = 0
        with moemesh.Client(endpoints["router"]) as client:
            for _ in range(50):
                ids = client.forward("0", request(generator, tokens), return_routing=True).routing.ids
                chosen = [int(e) for token in ids for e in token if e >= 0]
                calls += len(set(chosen))
                rows += len(chosen)
        return calls / 50, rows / 50

    small, large = arguments.tokens, 4 * arguments.tokens
    fits = []
    for tokens in (small, large):
        measured = run(1, tokens, arguments.seconds)
        calls, rows = calls_and_rows(tokens)
        fits.append((tokens, calls, rows, measured))
    # Expert CPU per request = calls · fixed + rows · per_row, from the two runs.
    (t1, c1, r1, m1), (t2, c2, r2, m2) = fits
    matrix = np.array([[c1, r1], [c2, r2]])
    fixed, per_row = np.linalg.solve(matrix, [m1["expert_cpu"], m2["expert_cpu"]])
    fixed, per_row = max(fixed, 0.0), max(per_row, 0.0)
    router_fixed = (m1["router_cpu"] * t2 - m2["router_cpu"] * t1) / (t2 - t1)
    router_per_token = max(0.0, (m2["router_cpu"] - m1["router_cpu"]) / (t2 - t1))
    router_fixed = max(0.0, router_fixed)
    status_file = os.path.join(folder, "status.json")
    with open(status_file, "w") as file:
        json.dump(status(binary, endpoints["coordinator"]), file)

    def simulate(clients, hop_us):
        out = subprocess.run(
            [binary, "simulate", "--nodes", "1", "--slots-per-node", str(cores), "--experts-per-group", "1",
             "--extra-replicas", "0", "--top-k", "2", "--hidden", str(hidden), "--wire-bytes", "4",
             "--call-us", str(fixed * 1e6), "--call-row-us", str(per_row * 1e6), "--router-us",
             str(router_fixed * 1e6), "--router-token-us", str(router_per_token * 1e6), "--router-node", "0",
             "--hop-us", str(hop_us), "--clients", str(clients), "--tokens", str(small), "--status", status_file,
             "--placements", "static", "--scale-to-zero", "off", "--warm-up-s", "1", "--seconds", "5", "--json"],
            check=True, capture_output=True, text=True).stdout
        return json.loads(out)[0]

    # The hop: what the 1-client latency leaves after the simulated CPU work (a wait, not CPU).
    unexplained = m1["latency"] - simulate(1, 0)["p50_ms"] / 1000
    hop_us = max(0.0, unexplained / 2 * 1e6)
    print(f"fit: call {fixed * 1e6:.0f} µs + {per_row * 1e6:.1f} µs/row; router+client {router_fixed * 1e6:.0f} µs + "
          f"{router_per_token * 1e6:.1f} µs/token; hop {hop_us:.0f} µs each way", file=sys.stderr)
    results = []
    for clients in [int(c) for c in arguments.clients.split(",")]:
        measured = m1 if clients == 1 else run(clients, small, arguments.seconds)
        predicted = simulate(clients, hop_us)
        results.append({"clients": clients, "measured": measured["tokens_per_second"],
                        "predicted": predicted["tokens_per_second"], "measured_bal": measured["balancedness"],
                        "predicted_bal": predicted["replica_balancedness"],
                        "cpu_ms_per_request": 1000 * (measured["expert_cpu"] + measured["router_cpu"])})
    return results


if __name__ == "__main__":
    sys.exit(main())
