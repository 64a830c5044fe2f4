"""Co-activation telemetry over real processes: the pairs of experts the router chose for the same token reach the
coordinator with its demand, and `moemesh status --json` shows them."""
import itertools
import json
import subprocess
import time
from collections import Counter

import numpy as np

import moemesh
from conftest import started_roles


def test_status_json_counts_the_pairs_the_router_chose(moemesh_binary, tiny_models):
    arguments = [moemesh_binary, "up", "--model", tiny_models["mixtral"], "--port", "0", "--coordinator-port", "0",
                 "--replicas", "1", "--threads", "1", "--log-level", "warning"]
    with started_roles(arguments, ["coordinator", "router"]) as endpoints:
        expected: Counter = Counter()
        tokens = 0
        with moemesh.Client(endpoints["router"]) as client:
            for seed in range(3):
                x = np.random.default_rng(seed).standard_normal((7, 32)).astype(np.float32)
                result = client.forward("1", x, return_routing=True)
                for chosen in result.routing.ids:
                    experts = sorted({int(e) for e in chosen if e >= 0})
                    expected.update(itertools.combinations(experts, 2))
                tokens += len(result.routing.ids)
        # Routers report every second; the coordinator sums the reports of its demand window.
        deadline = time.monotonic() + 30
        while True:
            status = json.loads(subprocess.run(
                [moemesh_binary, "status", "--coordinator", endpoints["coordinator"], "--json"],
                capture_output=True, text=True, check=True).stdout)
            layers = {layer["layer"]: layer for layer in status.get("coactivation", [])}
            if "1" in layers and layers["1"]["tokens"] == tokens or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert "1" in layers and layers["1"]["tokens"] == tokens, status.get("coactivation")
    assert layers["1"]["num_experts"] == 4
    assert {(a, b): n for a, b, n in layers["1"]["pairs"]} == dict(expected)
    assert "0" not in layers  # no token went through layer 0
