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


def test_plan_from_a_running_mesh_and_its_kustomize_overlay(moemesh_binary, tiny_models, tmp_path):
    """`moemesh plan --coordinator` groups every expert exactly once from the mesh's telemetry and says how many
    co-activated tokens its groups keep inside one process; `moemesh k8s render --plan` writes one Deployment per
    group with its selection and replicas."""
    model = tiny_models["qwen2_moe"]
    arguments = [moemesh_binary, "up", "--model", model, "--port", "0", "--coordinator-port", "0",
                 "--replicas", "1", "--threads", "1", "--log-level", "warning"]
    with started_roles(arguments, ["coordinator", "router"]) as endpoints:
        with moemesh.Client(endpoints["router"]) as client:
            for seed in range(4):
                client.forward("0", np.random.default_rng(seed).standard_normal((16, 32)).astype(np.float32))
        deadline = time.monotonic() + 30
        while True:
            status = json.loads(subprocess.run(
                [moemesh_binary, "status", "--coordinator", endpoints["coordinator"], "--json"],
                capture_output=True, text=True, check=True).stdout)
            if any(layer["tokens"] == 64 for layer in status.get("coactivation", [])) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        live = json.loads(subprocess.run(
            [moemesh_binary, "plan", "--model", model, "--coordinator", endpoints["coordinator"], "--nodes", "2",
             "--node-memory-gib", "1", "--experts-per-group", "2", "--json"],
            check=True, capture_output=True, text=True).stdout)
    # The same plan from the status saved to a file (what the planner read is then known exactly).
    status_file, plan_file = tmp_path / "status.json", tmp_path / "plan.json"
    status_file.write_text(json.dumps(status))
    subprocess.run(
        [moemesh_binary, "plan", "--model", model, "--status", str(status_file), "--nodes", "2",
         "--node-memory-gib", "1", "--experts-per-group", "2", "--out", str(plan_file)],
        check=True, capture_output=True, text=True)
    plan = json.loads(plan_file.read_text())
    for each in (live, plan):
        hosted = sorted((group["layer"], expert) for group in each["groups"] for expert in group["experts"])
        assert hosted == sorted((layer, expert) for layer in ("0", "1") for expert in (-1, 0, 1, 2, 3))
    assert all(len(group["experts"]) <= 2 for group in plan["groups"])
    # The share of co-activated tokens whose pair sits in one group, recomputed from the status the plan read.
    group_of = {(group["layer"], expert): group["name"] for group in plan["groups"] for expert in group["experts"]}
    pairs = [(layer["layer"], a, b, n) for layer in status["coactivation"] for a, b, n in layer["pairs"]]
    inside = sum(n for layer, a, b, n in pairs if group_of[(layer, a)] == group_of[(layer, b)])
    assert pairs and abs(plan["pairs_inside_groups"] - inside / sum(n for *_, n in pairs)) < 1e-9
    assert plan["pairs_inside_groups"] > 0  # the most frequent pair is always joined
    assert sum(group["replicas"] for group in plan["groups"]) == sum(len(node) for node in plan["nodes"])
    out = tmp_path / "overlay"
    subprocess.run([moemesh_binary, "k8s", "render", "--model", model, "--plan", str(plan_file), "--out", str(out)],
                   check=True, capture_output=True, text=True)
    experts = (out / "experts.yaml").read_text()
    for group in plan["groups"]:
        assert f'"--experts", "{group["selection"]}"' in experts
    assert experts.count("kind: Deployment") == len(plan["groups"])
