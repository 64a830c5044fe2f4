#!/usr/bin/env python3
"""A mesh under concurrent load for N minutes: every process's resident memory and open file descriptors sampled,
flat after warm-up or not, and every request counted. Run with the virtual environment scripts/test.sh makes:

    .venv/bin/python scripts/soak.py [--minutes 10] [--clients 8] [--moemesh .build/release/moemesh]

Serves the demo model with `moemesh up` (2 replicas per expert); clients send Forward calls of 1 to 64 tokens to
random layers over the stream API, and some over unary calls. Warm-up is the first 20% of the run (at least 30 s).
Exits 1 if a request failed or a process grew by more than 5% in memory or descriptors after warm-up.
"""
import argparse
import os
import random
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

sys.path.insert(0, os.path.join(ROOT, "clients", "python", "tests"))

import moemesh  # noqa: E402
from conftest import started  # noqa: E402


def children(pid: int) -> list:
    """`pid` and every process below it."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    fields = file.read().rsplit(")", 1)[1].split()
                parents.setdefault(int(fields[1]), []).append(int(entry))
            except OSError:
                continue
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(parents.get(current, []))
    return found


def sample(pid: int):
    """(name, resident KiB, open descriptors, anonymous KiB, file-backed KiB, threads) of `pid`, or None once it is
    gone. Anonymous memory is the heap and stacks (where a leak shows); file-backed is the program's own code and
    the memory-mapped weights, paged in as they are first used."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            words = file.read().split(b"\0")
        name = " ".join(word.decode() for word in words[1:3] if word)
        with open(f"/proc/{pid}/status") as file:
            status = {line.split(":")[0]: line.split()[1] for line in file if ":" in line and len(line.split()) > 1}
        return (name, int(status["VmRSS"]), len(os.listdir(f"/proc/{pid}/fd")), int(status["RssAnon"]),
                int(status["RssFile"]) + int(status.get("RssShmem", 0)), int(status["Threads"]))
    except (OSError, KeyError, ValueError):
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--moemesh", default=os.path.join(ROOT, ".build", "release", "moemesh"))
    parser.add_argument("--interval", type=float, default=10, help="seconds between samples")
    args = parser.parse_args()

    command = [args.moemesh, "up", "--port", "0", "--coordinator-port", "0", "--replicas", "2", "--log-level", "warning"]
    with started(command, "router") as router:
        up_pid = next(pid for pid in children(os.getpid())[1:] if (sample(pid) or ("",))[0].startswith("up "))
        with moemesh.Client(router) as probe:
            model = probe.describe()
        layers = [layer.name for layer in model.layers]
        stop = threading.Event()
        counts = {"sent": 0, "failed": 0}
        errors = []
        lock = threading.Lock()

        def load(seed: int) -> None:
            rng = random.Random(seed)
            with moemesh.Client(router, stream=seed % 4 != 0, timeout=60) as client:
                while not stop.is_set():
                    tokens = rng.randint(1, 64)
                    x = np.random.default_rng(rng.randrange(1 << 30)).standard_normal((tokens, model.hidden_size))
                    try:
                        client.forward(rng.choice(layers), x.astype(np.float32))
                        with lock:
                            counts["sent"] += 1
                    except moemesh.MoEMeshError as error:
                        with lock:
                            counts["sent"] += 1
                            counts["failed"] += 1
                            errors.append(str(error))

        threads = [threading.Thread(target=load, args=(seed,), daemon=True) for seed in range(args.clients)]
        for thread in threads:
            thread.start()
        began = time.monotonic()
        duration = args.minutes * 60
        warm_up = max(30.0, duration * 0.2)
        baseline, last = {}, {}
        while time.monotonic() - began < duration:
            time.sleep(args.interval)
            elapsed = time.monotonic() - began
            now = {pid: s for pid in children(up_pid) if (s := sample(pid)) is not None}
            if elapsed >= warm_up and not baseline:
                baseline = now
            last = now
            total_rss = sum(s[1] for s in now.values()) // 1024
            print(f"[{elapsed:5.0f} s] {counts['sent']} requests, {counts['failed']} failed; "
                  f"{len(now)} processes, {total_rss} MiB resident, {sum(s[2] for s in now.values())} descriptors",
                  flush=True)
        stop.set()
        for thread in threads:
            thread.join(timeout=70)

    print(f"\n{args.minutes:g} minutes, {args.clients} clients: {counts['sent']} requests, {counts['failed']} failed")
    worst = 0.0
    print(f"{'process':24} {'RSS after warm-up':>17} {'at end':>8} {'growth':>7} {'anon':>7} {'file':>7}"
          f" {'threads':>8} {'fds':>8}")
    for pid, (name, rss, fds, anon, file, threads) in sorted(last.items(), key=lambda item: item[1][0]):
        if pid not in baseline:
            print(f"{name[:24]:24} {'(new)':>17} {rss // 1024:>5} MiB")
            continue
        _, rss0, fds0, anon0, file0, threads0 = baseline[pid]
        growth = (rss - rss0) / rss0 * 100
        fd_growth = (fds - fds0) / max(fds0, 1) * 100
        worst = max(worst, growth, fd_growth)
        print(f"{name[:24]:24} {rss0 // 1024:>13} MiB {rss // 1024:>4} MiB {growth:>+6.1f}% {(anon - anon0) / 1024:>+5.1f}M"
              f" {(file - file0) / 1024:>+5.1f}M {threads0:>3}→{threads:<4} {fds0:>3}→{fds:<4}")
    for error in errors[:5]:
        print("failed:", error)
    ok = counts["failed"] == 0 and worst <= 5.0
    print(f"worst growth after warm-up {worst:+.1f}% (limit 5%); {'flat' if ok else 'NOT flat or requests failed'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
