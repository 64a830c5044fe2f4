"""A router stopped with SIGTERM while calls are in flight (the rolling update or scale-down of every deployment): it
answers what it holds within its drain timeout, and what outlives the drain gets UNAVAILABLE saying why."""
import concurrent.futures
import queue
import re
import signal
import subprocess
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest

from conftest import started_roles
from moemesh.v1 import router_pb2, router_pb2_grpc, tensor_pb2


class Router:
    """`moemesh router` in front of `expert`, its gRPC and HTTP endpoints read from its ready lines."""

    def __init__(self, binary: str, model: str, expert: str, drain_timeout_s: float):
        self.process = subprocess.Popen(
            [binary, "router", "--model", model, "--expert", expert, "--port", "0", "--http-port", "0",
             "--drain-timeout-s", str(drain_timeout_s), "--log-level", "warning"],
            stdout=subprocess.PIPE, text=True)
        lines: "queue.Queue[str | None]" = queue.Queue()

        def read():
            for line in self.process.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        endpoints = {}
        while len(endpoints) < 2:
            line = lines.get(timeout=120)
            assert line is not None, f"the router exited with {self.process.wait()} before it was ready"
            if match := re.match(r"(router|http) listening on (\S+)", line):
                endpoints[match.group(1)] = match.group(2)
        self.endpoint, self.http = endpoints["router"], endpoints["http"]

    def forward_calls_started(self) -> int:
        """Forward calls the router has taken so far (its /metrics)."""
        with urllib.request.urlopen(f"http://{self.http}/metrics", timeout=5) as response:
            text = response.read().decode()
        match = re.search(r'^moemesh_rpc_requests_total\{service="router",method="Forward"\} (\S+)$', text, re.M)
        return int(float(match.group(1))) if match else 0

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def request(hidden_size: int, seed: int) -> router_pb2.ForwardRequest:
    rows = np.random.default_rng(seed).standard_normal((2, hidden_size)).astype(np.float32)
    return router_pb2.ForwardRequest(layer="0", hidden_states=tensor_pb2.Tensor(
        dtype=tensor_pb2.DTYPE_F32, shape=[2, hidden_size], data=rows.tobytes()))


def calls_in_flight(router: Router, count: int, hidden_size: int):
    """`count` unary Forward calls started on their own threads, returned once the router has taken all of them."""
    channel = grpc.insecure_channel(router.endpoint)
    stub = router_pb2_grpc.RouterStub(channel)
    pool = concurrent.futures.ThreadPoolExecutor(count)
    futures = [pool.submit(stub.Forward, request(hidden_size, seed), timeout=60) for seed in range(count)]
    deadline = time.monotonic() + 60
    while router.forward_calls_started() < count:
        assert time.monotonic() < deadline, "the router never took the calls"
        time.sleep(0.02)
    return channel, pool, futures


@pytest.fixture(scope="module")
def model(tiny_models):
    return tiny_models["mixtral"]


def test_sigterm_answers_the_calls_in_flight_then_exits(moemesh_binary, model):
    # Each expert call takes 0.8 s, so the calls are still in flight when the router is told to stop.
    with started_roles([moemesh_binary, "expert", "--model", model, "--port", "0", "--compute-delay-ms", "800",
                        "--log-level", "warning"], ["expert"]) as expert:
        router = Router(moemesh_binary, model, expert["expert"], drain_timeout_s=20)
        try:
            channel, pool, futures = calls_in_flight(router, 4, hidden_size=32)
            router.process.send_signal(signal.SIGTERM)
            answers = [future.result() for future in futures]
            assert all(list(answer.output.shape) == [2, 32] for answer in answers)
            # It exits once they are answered, well within the drain timeout, and cleanly.
            assert router.process.wait(timeout=15) == 0
            channel.close()
            pool.shutdown()
        finally:
            router.stop()


def test_a_call_that_outlives_the_drain_gets_unavailable_saying_so(moemesh_binary, model):
    # Expert calls of 30 s against a drain of 0.5 s.
    with started_roles([moemesh_binary, "expert", "--model", model, "--port", "0", "--compute-delay-ms", "30000",
                        "--log-level", "warning"], ["expert"]) as expert:
        router = Router(moemesh_binary, model, expert["expert"], drain_timeout_s=0.5)
        try:
            channel, pool, futures = calls_in_flight(router, 2, hidden_size=32)
            router.process.send_signal(signal.SIGTERM)
            for future in futures:
                with pytest.raises(grpc.RpcError) as failure:
                    future.result()
                assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "shutting down" in failure.value.details()
            assert router.process.wait(timeout=15) == 0
            channel.close()
            pool.shutdown()
        finally:
            router.stop()


def free_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_client_with_wait_for_ready_lives_through_a_router_restart(moemesh_binary, model):
    import moemesh
    port = free_port()
    router_arguments = [moemesh_binary, "router", "--model", model, "--port", str(port), "--log-level", "warning"]
    hidden = np.random.default_rng(3).standard_normal((3, 32)).astype(np.float32)
    with started_roles([moemesh_binary, "expert", "--model", model, "--port", "0", "--log-level", "warning"],
                       ["expert"]) as expert:
        arguments = router_arguments + ["--expert", expert["expert"]]
        with moemesh.Client(f"127.0.0.1:{port}", wait_for_ready=True, timeout=30) as client, \
                moemesh.Client(f"127.0.0.1:{port}", timeout=30) as impatient:
            with started_roles(arguments, ["router"]):
                before = client.forward(0, hidden)  # a layer by number
                assert np.array_equal(before, impatient.forward("0", hidden))
            # The router is gone: a call that does not wait fails at once, as a MoEMeshError with its status.
            with pytest.raises(moemesh.MoEMeshError) as failure:
                impatient.forward("0", hidden, timeout=5)
            assert failure.value.code == grpc.StatusCode.UNAVAILABLE
            with started_roles(arguments, ["router"]):
                # The same client, its stream broken by the restart, reconnects and answers as before.
                assert np.array_equal(client.forward("0", hidden), before)
        with pytest.raises(moemesh.MoEMeshError) as closed:
            client.forward("0", hidden)
        assert closed.value.code == grpc.StatusCode.CANCELLED and "closed" in closed.value.message
        with pytest.raises(TypeError, match="layer: expected a layer name"):
            client.forward(0.5, hidden)
