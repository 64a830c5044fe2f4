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
    # The same telemetry drives the fleet simulator's routing (--status): every scenario runs, as JSON.
    simulated = json.loads(subprocess.run(
        [moemesh_binary, "simulate", "--status", str(status_file), "--nodes", "2", "--slots-per-node", "2",
         "--clients", "8", "--tokens", "4", "--top-k", "2", "--experts-per-group", "2", "--telemetry-tokens", "500",
         "--warm-up-s", "0.2", "--seconds", "0.5", "--policy-interval-s", "0.1", "--demand-window-s", "0.2",
         "--json"], check=True, capture_output=True, text=True).stdout)
    assert [(row["placement"], row["scale_to_zero"]) for row in simulated] == [
        (placement, zero) for zero in (False, True) for placement in ("static", "eplb", "planner")]
    assert all(row["tokens_per_second"] > 0 and 0 < row["replica_balancedness"] <= 1 for row in simulated)
    refused = subprocess.run([moemesh_binary, "simulate", "--experts", "4", "--top-k", "8"],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "top-k: expected at most the 4 experts, got 8" in refused.stderr
    out = tmp_path / "overlay"
    subprocess.run([moemesh_binary, "k8s", "render", "--model", model, "--plan", str(plan_file), "--out", str(out)],
                   check=True, capture_output=True, text=True)
    experts = (out / "experts.yaml").read_text()
    for group in plan["groups"]:
        assert f'"--experts", "{group["selection"]}"' in experts
    assert experts.count("kind: Deployment") == len(plan["groups"])


def _status(moemesh_binary, coordinator):
    return json.loads(subprocess.run(
        [moemesh_binary, "status", "--coordinator", coordinator, "--json"],
        capture_output=True, text=True, check=True).stdout)


def _services_per_token(status):
    """Expert services a token's experts sit in (top-2: 1 when its pair shares a serving group, else 2), from the
    status's co-activation counts and serving groups: what the plan's figure should be, recomputed independently."""
    group_of = {expert: group["group"] for group in status["groups"] if group["serving_replicas"] > 0
                for expert in group["experts"]}
    tokens = services = 0
    for layer in status["coactivation"]:
        tokens += layer["tokens"]
        services += layer["tokens"]
        services += sum(n for a, b, n in layer["pairs"]
                        if group_of.get(f'{layer["layer"]}:{a}') != group_of.get(f'{layer["layer"]}:{b}'))
    return services / tokens


def test_plan_applied_to_a_running_mesh_loses_no_request_and_cuts_services_per_token(moemesh_binary, tiny_models):
    """`moemesh plan --apply` on a live `moemesh up` mesh under load: the plan's groups start, the per-index groups
    drain and stop; every request sent meanwhile is answered, with the answer the mesh gave before the plan (1e-5);
    afterwards a token's experts sit in fewer services than before."""
    import threading
    model = tiny_models["mixtral"]
    arguments = [moemesh_binary, "up", "--model", model, "--port", "0", "--coordinator-port", "0",
                 "--replicas", "1", "--threads", "1", "--log-level", "warning"]
    with started_roles(arguments, ["coordinator", "router"]) as endpoints:
        inputs = [("0" if seed % 2 else "1", np.random.default_rng(100 + seed).standard_normal((6, 32))
                   .astype(np.float32)) for seed in range(8)]
        with moemesh.Client(endpoints["router"]) as client:
            expected = [client.forward(layer, x) for layer, x in inputs]
        stop = threading.Event()
        answered, errors, wrong = [0], [], [0]
        lock = threading.Lock()

        def drive(worker):
            with moemesh.Client(endpoints["router"]) as client:
                call = worker
                while not stop.is_set():
                    layer, x = inputs[call % len(inputs)]
                    try:
                        output = client.forward(layer, x)
                        error = float(np.abs(output - expected[call % len(inputs)]).max())
                        with lock:
                            answered[0] += 1
                            wrong[0] += error > 1e-5
                    except Exception as failure:  # noqa: BLE001 - every failure is a lost request
                        with lock:
                            errors.append(repr(failure))
                    call += 1

        workers = [threading.Thread(target=drive, args=(worker,)) for worker in range(3)]
        for worker in workers:
            worker.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                before = _status(moemesh_binary, endpoints["coordinator"])
                if sum(layer["tokens"] for layer in before.get("coactivation", [])) >= 200:
                    break
                time.sleep(0.2)
            assert {group["group"] for group in before["groups"]} == {"*:0", "*:1", "*:2", "*:3"}
            services_before = _services_per_token(before)
            applied = subprocess.run(
                [moemesh_binary, "plan", "--model", model, "--coordinator", endpoints["coordinator"], "--nodes", "1",
                 "--node-memory-gib", "1", "--experts-per-group", "2", "--apply", "--json"],
                check=True, capture_output=True, text=True)
            plan = json.loads(applied.stdout)
            assert "4 replicas of replaced groups draining" in applied.stderr, applied.stderr
            planned = {group["name"] for group in plan["groups"]}
            # The old groups' replicas finish what they have, stop, and the coordinator forgets the groups.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                after = _status(moemesh_binary, endpoints["coordinator"])
                if {group["group"] for group in after["groups"]} == planned and \
                        all(replica["group"] in planned for replica in after["replicas"]):
                    break
                time.sleep(0.2)
            assert {group["group"] for group in after["groups"]} == planned
            # Traffic served by the new groups alone, then the counts of the window are read again.
            with lock:
                mark = answered[0]
            deadline = time.monotonic() + 60
            while True:
                with lock:
                    if answered[0] >= mark + 100:
                        break
                assert time.monotonic() < deadline, f"the new groups answered {answered[0] - mark} calls in 60 s"
                time.sleep(0.05)
        finally:
            stop.set()
            for worker in workers:
                worker.join()
        after = _status(moemesh_binary, endpoints["coordinator"])
    assert errors == [] and wrong[0] == 0, (errors[:3], wrong[0])
    assert answered[0] > 100
    assert services_before == 2.0  # one group per expert index: a token's two experts are two services
    assert plan["services_per_token_now"] == services_before
    services_after = _services_per_token(after)
    assert services_after < services_before
    assert abs(plan["services_per_token"] - 2 + plan["pairs_inside_groups"]) < 1e-9  # top-2: 2 − share inside
    print(f"services per token: {services_before:.3f} before, {services_after:.3f} after "
          f"(plan: {plan['services_per_token']:.3f}); {answered[0]} requests, 0 lost")
