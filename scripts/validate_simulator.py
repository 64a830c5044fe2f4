#!/usr/bin/env python3
"""The fleet simulator against a real mesh: `moemesh simulate`'s prediction next to what `moemesh up` measures.

    .venv/bin/python scripts/validate_simulator.py [--moemesh .build/release/moemesh] [--clients 1,2,4]
        [--tokens 16] [--seconds 5] [--zipf 1.2] [--batching off]

A real mesh on this machine (`moemesh up`: one expert process per expert of a synthetic 8-expert top-2 layer, a
router, the coordinator) serves a Zipf-skewed load: each request's tokens are drawn from a pool of tokens bucketed by
the expert the gate ranks first, the bucket by Zipf rank. Per client count it measures tokens/s and balancedness
(mean / max of the replicas' rows per second, from the coordinator's status) and the CPU seconds of the experts, the
router and this client.

The simulator's model is fitted from 1-client runs alone (requests of 1, 4, T and 4T tokens, so that calls per request
range from 2 to 8 and the costs per call and per row separate): one node with as many slots as this machine has cores; an expert call costs the experts'
CPU per call (`fixed + per row`); each batch's router CPU and each request's client CPU run on the same node's slots;
one router batching as `moemesh router` does (`--batching`); the hop's latency is what remains of the 1-client
latency. Routing is the coordinator's recorded demand and
co-activation (`moemesh simulate --status`). Then it predicts every client count, and the table shows the error.
"""
import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

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
    parser.add_argument("--repeat", type=int, default=1,
                        help="fit and predict this many times on the same mesh (this machine is noisy)")
    parser.add_argument("--batching", default="on", choices=["on", "off"],
                        help="the router's dynamic batching, in the mesh and in the simulation")
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
                              stdout=subprocess.PIPE, text=True)
        router = None
        try:
            endpoints = ready(up, ["coordinator", "router"])
            # The clients' router: one of our own, with its metrics (expert calls per request) over HTTP; up's own
            # router idles beside it.
            router = subprocess.Popen([binary, "router", "--model", model, "--coordinator", endpoints["coordinator"],
                                       "--port", "0", "--http-port", "0", "--batching", arguments.batching,
                                       "--log-level", "warning"], stdout=subprocess.PIPE, text=True)
            endpoints.update(ready(router, ["router", "http"]))
            runs = [measure_and_predict(binary, [up.pid, router.pid], endpoints, arguments, cores, folder)
                    for _ in range(arguments.repeat)]
        finally:
            for process in (router, up):
                if process:
                    process.terminate()
                    process.wait(timeout=60)
    print(f"validation: `moemesh up` (8 experts, top-2, H={arguments.hidden}, I={arguments.intermediate}, "
          f"{arguments.tokens} tokens/request, Zipf {arguments.zipf}, router batching {arguments.batching}) on {cores} "
          "cores vs `moemesh simulate`")
    for number, results in enumerate(runs, 1):
        print(f"run {number}: clients  measured tok/s  predicted tok/s  error   measured bal  predicted bal  error  "
              "CPU ms/request")
        for row in results:
            print(f"{row['clients']:>14}  {row['measured']:>14.0f}  {row['predicted']:>15.0f}  "
                  f"{100 * (row['predicted'] / row['measured'] - 1):>+5.1f}%  {row['measured_bal']:>12.3f}  "
                  f"{row['predicted_bal']:>13.3f}  {100 * (row['predicted_bal'] / row['measured_bal'] - 1):>+5.1f}%  "
                  f"{row['cpu_ms_per_request']:>14.2f}")
    if len(runs) > 1:
        print("median over runs: clients  |throughput error|  |balancedness error|")
        for index, row in enumerate(runs[0]):
            errors = sorted(abs(run[index]["predicted"] / run[index]["measured"] - 1) for run in runs)
            balance = sorted(abs(run[index]["predicted_bal"] / run[index]["measured_bal"] - 1) for run in runs)
            print(f"{row['clients']:>25}  {100 * errors[len(errors) // 2]:>17.1f}%  {100 * balance[len(balance) // 2]:>19.1f}%")
    print(json.dumps(runs))
    return 0


def client_request(buckets, weights, generator, tokens):
    """A request of `tokens` tokens whose first experts follow `weights`."""
    experts = generator.choice(len(weights), size=tokens, p=weights)
    return np.stack([buckets[e][generator.integers(len(buckets[e]))] for e in experts])


def drive_client(router, buckets, weights, tokens, seed, stop, counter, results):
    """One client process: requests until `stop`; puts its latencies (after its first 5) on `results`."""
    generator = np.random.default_rng(seed)
    latencies = []
    with moemesh.Client(router) as client:
        while not stop.is_set():
            x = client_request(buckets, weights, generator, tokens)
            started = time.monotonic()
            client.forward("0", x)
            latencies.append(time.monotonic() - started)
            with counter.get_lock():
                counter.value += 1
    results.put(latencies[5:])


def ready(process, roles):
    """The endpoints of `roles` from `process`'s ready lines ('ROLE listening on HOST:PORT')."""
    endpoints = {}
    for line in process.stdout:
        for role in roles:
            if line.startswith(f"{role} listening on"):
                endpoints[role] = line.split()[3]
        if len(endpoints) == len(roles):
            return endpoints
    raise RuntimeError(f"exited with {process.wait()} before {roles} were ready")


def router_counts(endpoint):
    """(requests, expert calls) the router has counted, from its /metrics."""
    text = urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=10).read().decode()
    totals = {"moemesh_router_requests_total": 0.0, "moemesh_router_expert_call_seconds_count": 0.0}
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals["moemesh_router_requests_total"], totals["moemesh_router_expert_call_seconds_count"]


def measure_and_predict(binary, roots, endpoints, arguments, cores, folder):
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

    buckets = {expert: np.stack(rows) for expert, rows in buckets.items()}

    def request(generator, tokens):
        return client_request(buckets, weights, generator, tokens)

    def run(clients, tokens, seconds):
        # One process per client, as independent clients are (threads would share one interpreter lock).
        context = multiprocessing.get_context("spawn")
        stop, counter, results = context.Event(), context.Value("l", 0), context.Queue()
        workers = [context.Process(target=drive_client, args=(endpoints["router"], buckets, weights, tokens,
                                                            1000 + worker, stop, counter, results))
                   for worker in range(clients)]
        for worker in workers:
            worker.start()
        experts = [int(replica["instance"]) for replica in status(binary, endpoints["coordinator"])["replicas"]]
        tree = roots + [pid for root in roots for pid in descendants(root)]
        time.sleep(3)  # the clients start (numpy, grpc) and warm up
        client_pids = [worker.pid for worker in workers]

        def cpu():
            return (sum(map(cpu_seconds, experts)), sum(map(cpu_seconds, tree)), sum(map(cpu_seconds, client_pids)))

        before_requests, before_cpu, before_calls = counter.value, cpu(), router_counts(endpoints["http"])
        started = time.monotonic()
        balance = []
        while time.monotonic() - started < seconds:
            time.sleep(1)
            replicas = status(binary, endpoints["coordinator"])["replicas"]
            rates = [replica["rows_per_second"] for replica in replicas]
            if max(rates) > 0:
                balance.append(sum(rates) / len(rates) / max(rates))
        elapsed = time.monotonic() - started
        requests = counter.value - before_requests
        used = [after - before for after, before in zip(cpu(), before_cpu)]
        calls = [after - before for after, before in zip(router_counts(endpoints["http"]), before_calls)]
        stop.set()
        latencies = [latency for _ in workers for latency in results.get(timeout=60)]
        for worker in workers:
            worker.join()
        return {"tokens_per_second": requests * tokens / elapsed, "requests": requests,
                "expert_cpu": used[0] / requests, "router_cpu": (used[1] - used[0]) / requests,
                "client_cpu": used[2] / requests, "latency": float(np.median(latencies)),
                "balancedness": float(np.mean(balance)) if balance else 1.0,
                "calls_per_token": calls[1] / max(1.0, calls[0]) / tokens}

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

    # Serial runs whose requests touch from 2 to all 8 experts, so that the cost per call and per row separate.
    small = arguments.tokens
    fits = []
    for tokens in sorted({1, 4, small, 4 * small}):
        measured = run(1, tokens, arguments.seconds)
        calls, rows = calls_and_rows(tokens)
        fits.append((tokens, calls, rows, measured))
    m1 = next(measured for tokens, _, _, measured in fits if tokens == small)
    # Expert CPU per request = calls · fixed + rows · per_row (least squares, no intercept).
    (fixed, per_row), *_ = np.linalg.lstsq(np.array([[calls, rows] for _, calls, rows, _ in fits]),
                                           np.array([measured["expert_cpu"] for *_, measured in fits]), rcond=None)
    fixed, per_row = max(fixed, 0.0), max(per_row, 0.0)

    def line(key):
        """fixed + per token through the serial runs (each request its own batch)."""
        per_token, intercept = np.polyfit([tokens for tokens, *_ in fits], [measured[key] for *_, measured in fits], 1)
        return max(0.0, intercept), max(0.0, per_token)

    router_fixed, router_per_token = line("router_cpu")
    client_fixed, client_per_token = line("client_cpu")
    status_file = os.path.join(folder, "status.json")
    with open(status_file, "w") as file:
        json.dump(status(binary, endpoints["coordinator"]), file)

    def simulate(clients, hop_us):
        out = subprocess.run(
            [binary, "simulate", "--nodes", "1", "--slots-per-node", str(cores), "--node-discipline", "shared", "--service-jitter", "1",
             "--experts-per-group", "1",
             "--extra-replicas", "0", "--top-k", "2", "--hidden", str(hidden), "--wire-bytes", "4",
             "--call-us", str(fixed * 1e6), "--call-row-us", str(per_row * 1e6), "--router-us",
             str(router_fixed * 1e6), "--router-token-us", str(router_per_token * 1e6), "--client-us",
             str(client_fixed * 1e6), "--client-token-us", str(client_per_token * 1e6), "--routers", "1",
             "--batching", arguments.batching, "--router-node", "0",
             "--hop-us", str(hop_us), "--clients", str(clients), "--tokens", str(small), "--status", status_file,
             "--placements", "static", "--scale-to-zero", "off", "--warm-up-s", "1", "--seconds", "5", "--json"],
            check=True, capture_output=True, text=True).stdout
        return json.loads(out)[0]

    # The hop: what the 1-client latency leaves after the simulated CPU work (a wait, not CPU).
    unexplained = m1["latency"] - simulate(1, 0)["p50_ms"] / 1000
    hop_us = max(0.0, unexplained / 2 * 1e6)
    print(f"fit: call {fixed * 1e6:.0f} µs + {per_row * 1e6:.1f} µs/row; router {router_fixed * 1e6:.0f} µs + "
          f"{router_per_token * 1e6:.1f} µs/token; client {client_fixed * 1e6:.0f} µs + {client_per_token * 1e6:.1f} "
          f"µs/token; hop {hop_us:.0f} µs each way", file=sys.stderr)
    results = []
    for clients in [int(c) for c in arguments.clients.split(",")]:
        measured = m1 if clients == 1 else run(clients, small, arguments.seconds)
        predicted = simulate(clients, hop_us)
        print(f"{clients} clients: CPU per request: experts {measured['expert_cpu'] * 1e3:.2f} ms, router "
              f"{measured['router_cpu'] * 1e3:.2f} ms, client {measured['client_cpu'] * 1e3:.2f} ms; calls per token "
              f"{measured['calls_per_token']:.3f} measured, {predicted['calls_per_token']:.3f} simulated", file=sys.stderr)
        results.append({"clients": clients, "measured": measured["tokens_per_second"],
                        "predicted": predicted["tokens_per_second"], "measured_bal": measured["balancedness"],
                        "predicted_bal": predicted["replica_balancedness"],
                        "cpu_ms_per_request": 1000 * (measured["expert_cpu"] + measured["router_cpu"]
                                                      + measured["client_cpu"])})
    return results


if __name__ == "__main__":
    sys.exit(main())
