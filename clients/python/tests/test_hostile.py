"""Malformed and hostile requests against real processes: a router, an expert and a coordinator started with tokens,
a 1 MiB message limit, a cap of 4 concurrent calls per connection and their HTTP endpoints. Each case gets the
status README.md's "Hostile requests" table promises (the table is checked against CASES here), and the service it
hit still answers a good request afterwards."""
import dataclasses
import os
import re
import secrets
import select
import selectors
import socket
import time
import struct
import subprocess
from typing import Callable

import grpc
import h2.connection
import h2.events
import h2.settings
import numpy as np
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from conftest import ROOT, started_roles
from moemesh.v1 import coordinator_pb2, coordinator_pb2_grpc, expert_pb2, expert_pb2_grpc
from moemesh.v1 import router_pb2, router_pb2_grpc, tensor_pb2

TOKENS = {role: f"{role}-{secrets.token_hex(12)}" for role in ("client", "admin", "mesh")}
HIDDEN = 32
MAX_CONCURRENT_CALLS = 4


@dataclasses.dataclass
class Mesh:
    router: str
    router_http: str
    expert: str
    coordinator: str
    coordinator_http: str

    def channel(self, service: str) -> grpc.Channel:
        return grpc.insecure_channel(getattr(self, service), options=[("grpc.max_send_message_length", 64 << 20)])


@pytest.fixture(scope="module")
def mesh(tmp_path_factory, moemesh_binary, tiny_models):
    folder = tmp_path_factory.mktemp("hostile")
    tokens = folder / "tokens"
    tokens.write_text("".join(f"{role} {token}\n" for role, token in TOKENS.items()))
    mesh_token = folder / "mesh-token"
    mesh_token.write_text(TOKENS["mesh"])
    model = tiny_models["mixtral"]
    common = ["--model", model, "--port", "0", "--http-port", "0", "--auth-tokens", str(tokens), "--token-file",
              str(mesh_token), "--max-concurrent-calls", str(MAX_CONCURRENT_CALLS), "--log-level", "error"]
    with started_roles([moemesh_binary, "coordinator", "--scaler", "none", *common], ["coordinator", "http"]) as c:
        with started_roles([moemesh_binary, "expert", "--max-message-mib", "1", *common], ["expert", "http"]) as e:
            with started_roles([moemesh_binary, "router", "--expert", e["expert"], "--max-message-mib", "1", *common],
                               ["router", "http"]) as r:
                yield Mesh(router=r["router"], router_http=r["http"], expert=e["expert"],
                           coordinator=c["coordinator"], coordinator_http=c["http"])


def bearer(role: str | None) -> list:
    return [] if role is None else [("authorization", f"Bearer {TOKENS.get(role, role)}")]


def tensor(shape, dtype=tensor_pb2.DTYPE_F32, data: bytes | None = None, values=None) -> tensor_pb2.Tensor:
    if data is None:
        array = np.full(shape, 0.25, np.float32) if values is None else np.asarray(values, np.float32).reshape(shape)
        data = array.tobytes()
    return tensor_pb2.Tensor(dtype=dtype, shape=list(shape), data=data)


# ---------------------------------------------------------------- how each service is called
def grpc_outcome(call: Callable[[], object]) -> tuple[str, str]:
    """('OK', the answer as JSON, default values included) or (the status code's name, its message)."""
    try:
        answer = call()
    except grpc.RpcError as error:
        return error.code().name, error.details() or ""
    if not isinstance(answer, Message):
        return "OK", ""
    return "OK", json_format.MessageToJson(answer, always_print_fields_with_no_presence=True, indent=None)


def forward(mesh: Mesh, request: router_pb2.ForwardRequest, role: str | None = "client"):
    with mesh.channel("router") as channel:
        return grpc_outcome(lambda: router_pb2_grpc.RouterStub(channel).Forward(request, metadata=bearer(role),
                                                                                timeout=30))


def compute(mesh: Mesh, request: expert_pb2.ComputeRequest, role: str | None = "mesh"):
    with mesh.channel("expert") as channel:
        return grpc_outcome(lambda: expert_pb2_grpc.ExpertStub(channel).Compute(request, metadata=bearer(role),
                                                                                timeout=30))


def coordinator(mesh: Mesh, method: str, request, role: str | None = "admin"):
    with mesh.channel("coordinator") as channel:
        stub = coordinator_pb2_grpc.CoordinatorStub(channel)
        return grpc_outcome(lambda: getattr(stub, method)(request, metadata=bearer(role), timeout=30))


def raw_grpc(mesh: Mesh, service: str, path: str, payload: bytes, role: str | None, **options):
    """A unary call with `payload` as the message bytes, not necessarily protobuf."""
    with grpc.insecure_channel(getattr(mesh, service), **options) as channel:
        call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        return grpc_outcome(lambda: call(payload, metadata=bearer(role), timeout=30))


def http(endpoint: str, request: bytes) -> tuple[str, str]:
    """Sends raw bytes to an HTTP endpoint and reads until it closes; the outcome is 'HTTP <status>' (with the whole
    response) or 'closed' (with how many bytes came before the close)."""
    host, port = endpoint.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        try:
            connection.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    match = re.match(rb"HTTP/1\.[01] (\d+)", answer)
    if match:
        return f"HTTP {match.group(1).decode()}", answer.decode(errors="replace")
    return "closed", "HTTP/2 frames sent before the close: " + (", ".join(http2_frame_types(answer)) or "none")


def http2_frame_types(data: bytes) -> list[str]:
    """The types of the HTTP/2 frames in `data` (9-byte headers: length, type, flags, stream)."""
    names = {0: "DATA", 1: "HEADERS", 3: "RST_STREAM", 4: "SETTINGS", 6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE"}
    types, offset = [], 0
    while offset + 9 <= len(data):
        types.append(names.get(data[offset + 3], f"type {data[offset + 3]}"))
        offset += 9 + int.from_bytes(data[offset:offset + 3], "big")
    return types


def get(endpoint: str, path: str, method: str = "GET", extra: str = "") -> tuple[str, str]:
    return http(endpoint, f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n".encode())


def slow_header(endpoint: str) -> tuple[str, str]:
    """Sends a request head a byte every 0.2 s and never finishes it; 'closed' once the server closes the connection
    (its request timeout: 10 s), with how long that took."""
    host, port = endpoint.rsplit(":", 1)
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=60) as connection:
        connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        try:
            while time.monotonic() - started < 60:
                connection.sendall(b"X")
                readable, _, _ = select.select([connection], [], [], 0.2)
                if readable and connection.recv(65536) == b"":
                    return "closed", f"after {time.monotonic() - started:.1f} s"
        except (BrokenPipeError, ConnectionResetError):
            return "closed", f"after {time.monotonic() - started:.1f} s"
    return "open", "still open after 60 s"


def too_many_streams(mesh: Mesh) -> tuple[str, str]:
    """Opens MAX_CONCURRENT_CALLS + 1 Forward calls on one HTTP/2 connection, sending none of them a message (so all
    stay open), and reports what the server did with the one over the limit (whichever the server took last); then
    checks that the connection's other calls go on: each, sent its message now, is answered OK."""
    host, port = mesh.router.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        connection = h2.connection.H2Connection()
        connection.initiate_connection()
        sock.sendall(connection.data_to_send())
        headers = [(":method", "POST"), (":scheme", "http"), (":path", "/moemesh.v1.Router/Forward"),
                   (":authority", mesh.router), ("content-type", "application/grpc"), ("te", "trailers"),
                   *bearer("client")]
        streams = []
        for _ in range(MAX_CONCURRENT_CALLS + 1):
            streams.append(connection.get_next_available_stream_id())
            connection.send_headers(streams[-1], headers)
            sock.sendall(connection.data_to_send())

        def events():
            while True:
                data = sock.recv(65536)
                if not data:
                    raise AssertionError("the server closed the connection")
                yield from connection.receive_data(data)
                sock.sendall(connection.data_to_send())

        def status(event) -> dict | None:
            fields = {key.decode(): value.decode() for key, value in event.headers}
            return fields if "grpc-status" in fields else None

        outcome, refused = None, None
        for event in events():
            if isinstance(event, h2.events.ConnectionTerminated):
                return f"GOAWAY {event.error_code.name}", f"last stream {event.last_stream_id}"
            if isinstance(event, h2.events.StreamReset):
                return f"RST_STREAM {event.error_code.name}", f"stream {event.stream_id} of {streams}"
            if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)) and (fields := status(event)):
                code = next(code for code in grpc.StatusCode if code.value[0] == int(fields["grpc-status"]))
                outcome, refused = (code.name, fields.get("grpc-message", "")), event.stream_id
                break
        # The other calls go on: their messages now, each answered OK.
        message = forward_request(tensor([2, HIDDEN])).SerializeToString()
        others = [stream for stream in streams if stream != refused]
        for stream in others:
            connection.send_data(stream, b"\x00" + struct.pack(">I", len(message)) + message, end_stream=True)
        sock.sendall(connection.data_to_send())
        answered = set()
        for event in events():
            if isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                raise AssertionError(f"the other calls did not go on: {event}")
            if isinstance(event, h2.events.TrailersReceived) and (fields := status(event)):
                assert fields["grpc-status"] == "0", f"stream {event.stream_id} ended {fields}"
                answered.add(event.stream_id)
                if answered == set(others):
                    return outcome


# ---------------------------------------------------------------- the cases
def forward_request(hidden: tensor_pb2.Tensor, layer: str = "0", token_ids=()) -> router_pb2.ForwardRequest:
    return router_pb2.ForwardRequest(layer=layer, hidden_states=hidden, token_ids=list(token_ids))


def compute_request(rows: tensor_pb2.Tensor, layer: str = "0", expert: int = 1) -> expert_pb2.ComputeRequest:
    return expert_pb2.ComputeRequest(layer=layer, expert=expert, rows=rows)


def register(**fields) -> coordinator_pb2.RegisterRequest:
    request = coordinator_pb2.RegisterRequest(
        endpoint="127.0.0.1:1", group="*:0", experts=[expert_pb2.ExpertKey(layer="0", expert=0)], device="cpu",
        model_type="mixtral", hidden_size=HIDDEN, instance="stranger")
    for key, value in fields.items():
        if key in ("experts", "gate_probes"):
            del getattr(request, key)[:]
            getattr(request, key).extend(value)
        else:
            setattr(request, key, value)
    return request


@dataclasses.dataclass
class Case:
    id: str
    service: str  # router, expert, coordinator, router-http, coordinator-http
    expect: str  # a gRPC status code name, 'HTTP <status>', 'closed' or an HTTP/2 frame and error code
    words: str  # in the status message (gRPC) or the response (HTTP)
    run: Callable[[Mesh], tuple[str, str]]

    def __str__(self) -> str:
        return self.id


NAN = np.full((2, HIDDEN), 0.5, np.float32)
NAN[1, 3] = np.nan
HUGE = np.where(np.arange(3 * HIDDEN) % 2 == 0, 1e30, -1e30).astype(np.float32)

CASES = [
    # Router: Forward.
    Case("R01", "router", "INVALID_ARGUMENT", f"hidden size: expected {HIDDEN}, got 33",
         lambda m: forward(m, forward_request(tensor([2, 33])))),
    Case("R02", "router", "INVALID_ARGUMENT", f"data length: expected {2 * HIDDEN * 4} bytes",
         lambda m: forward(m, forward_request(tensor([2, HIDDEN], data=b"\0" * 300)))),
    Case("R21", "router", "INVALID_ARGUMENT",
         "token_ids: expected ids of 0 or more (vocabulary indices), got -3 for token 1",
         lambda m: forward(m, forward_request(tensor([2, HIDDEN]), token_ids=[5, -3]))),
    Case("R03", "router", "NOT_FOUND", "layer '9' is not an MoE layer of this model",
         lambda m: forward(m, forward_request(tensor([2, HIDDEN]), layer="9"))),
    Case("R04", "router", "INVALID_ARGUMENT", "empty batch",
         lambda m: forward(m, forward_request(tensor([0, HIDDEN], data=b"")))),
    Case("R05", "router", "INVALID_ARGUMENT", "expected finite values, got nan at token 1, column 3",
         lambda m: forward(m, forward_request(tensor([2, HIDDEN], values=NAN)))),
    Case("R06", "router", "INVALID_ARGUMENT", f"expected shape [T, {HIDDEN}] or [B, S, {HIDDEN}], got [{HIDDEN}]",
         lambda m: forward(m, forward_request(tensor([HIDDEN])))),
    Case("R07", "router", "INVALID_ARGUMENT", "has a negative dimension",
         lambda m: forward(m, forward_request(tensor([-1, HIDDEN], data=b"")))),
    Case("R08", "router", "INVALID_ARGUMENT", "has more elements",
         lambda m: forward(m, forward_request(tensor([1 << 40, 1 << 40, HIDDEN], data=b"")))),
    Case("R21", "router", "INVALID_ARGUMENT", "has more elements than can be addressed",
         lambda m: forward(m, forward_request(tensor([1 << 60, 4], data=b"")))),
    Case("R09", "router", "INVALID_ARGUMENT", "expected a tensor with dtype f32, bf16 or f16, got none",
         lambda m: forward(m, router_pb2.ForwardRequest(layer="0"))),
    Case("R10", "router", "INVALID_ARGUMENT", "expected dtype f32, bf16 or f16, got unknown dtype 99",
         lambda m: forward(m, forward_request(tensor([2, HIDDEN], dtype=99)))),
    Case("R11", "router", "INVALID_ARGUMENT", "token_ids: expected one per token (2) or none, got 3",
         lambda m: forward(m, forward_request(tensor([2, HIDDEN]), token_ids=[1, 2, 3]))),
    Case("R12", "router", "INVALID_ARGUMENT", "overflowed to inf/NaN for inputs as large as |x| = 1e+30",
         lambda m: forward(m, forward_request(tensor([3, HIDDEN], values=HUGE)))),
    Case("R13", "router", "RESOURCE_EXHAUSTED", "above this service's limit of 1.0 MiB (--max-message-mib)",
         lambda m: forward(m, forward_request(tensor([9000, HIDDEN])))),
    Case("R14", "router", "UNAUTHENTICATED", "expected metadata 'authorization: Bearer TOKEN', got none",
         lambda m: forward(m, forward_request(tensor([2, HIDDEN])), role=None)),
    Case("R15", "router", "UNAUTHENTICATED", "not one this service accepts",
         lambda m: forward(m, forward_request(tensor([2, HIDDEN])), role="forged-token-0123456789")),
    Case("R16", "router", "PERMISSION_DENIED", "needs role client or admin; this token's role is mesh",
         lambda m: forward(m, forward_request(tensor([2, HIDDEN])), role="mesh")),
    Case("R17", "router", "INVALID_ARGUMENT", "Can't deserialize to message of type Moemesh_V1_ForwardRequest",
         lambda m: raw_grpc(m, "router", "/moemesh.v1.Router/Forward", b"\xff\xff\xff\xff garbage", "client")),
    Case("R18", "router", "UNIMPLEMENTED", "method '/moemesh.v1.Router/Nope' is not served here",
         lambda m: raw_grpc(m, "router", "/moemesh.v1.Router/Nope", b"", "client")),
    Case("R19", "router", "RESOURCE_EXHAUSTED", "too many calls at once on this connection: at most 4 (--max-concurrent-calls)",
         too_many_streams),
    Case("R20", "router", "closed", "HTTP/2 frames sent before the close: SETTINGS, WINDOW_UPDATE",
         lambda m: http(m.router, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")),
    # Expert: Compute and Prefetch, which only the mesh may call.
    Case("E01", "expert", "PERMISSION_DENIED", "needs role mesh; this token's role is client",
         lambda m: compute(m, compute_request(tensor([2, HIDDEN])), role="client")),
    Case("E02", "expert", "UNAUTHENTICATED", "got none",
         lambda m: compute(m, compute_request(tensor([2, HIDDEN])), role=None)),
    Case("E03", "expert", "NOT_FOUND", "layer 0 expert 9 is not hosted by this expert service",
         lambda m: compute(m, compute_request(tensor([2, HIDDEN]), expert=9))),
    Case("E04", "expert", "INVALID_ARGUMENT", f"expected shape [N, {HIDDEN}], got [1, 2, {HIDDEN}]",
         lambda m: compute(m, compute_request(tensor([1, 2, HIDDEN])))),
    Case("E05", "expert", "INVALID_ARGUMENT", "expected finite values, got inf",
         lambda m: compute(m, compute_request(tensor([1, HIDDEN], values=[np.inf] * HIDDEN)))),
    Case("E06", "expert", "RESOURCE_EXHAUSTED", "above this service's limit of 1.0 MiB (--max-message-mib)",
         lambda m: compute(m, compute_request(tensor([9000, HIDDEN])))),
    Case("E07", "expert", "NOT_FOUND", "layer 7 expert 0 is not hosted",
         lambda m: raw_grpc(m, "expert", "/moemesh.v1.Expert/Prefetch", expert_pb2.PrefetchRequest(
             experts=[expert_pb2.ExpertKey(layer="7", expert=0)]).SerializeToString(), "mesh")),
    Case("E08", "expert", "INVALID_ARGUMENT", "row_counts [1, 1] must each be at least 1 and sum to the 3 rows sent",
         lambda m: compute(m, expert_pb2.ComputeRequest(layer="0", experts=[0, 1], row_counts=[1, 1],
                                                        rows=tensor([3, HIDDEN])))),
    Case("E09", "expert", "INVALID_ARGUMENT", "experts names 2 experts but row_counts has 1 counts",
         lambda m: compute(m, expert_pb2.ComputeRequest(layer="0", experts=[0, 1], row_counts=[3],
                                                        rows=tensor([3, HIDDEN])))),
    # Coordinator: joining the mesh, and admin actions.
    Case("C01", "coordinator", "PERMISSION_DENIED", "needs role mesh; this token's role is client",
         lambda m: coordinator(m, "Register", register(), role="client")),
    Case("C02", "coordinator", "UNAUTHENTICATED", "got none",
         lambda m: coordinator(m, "Register", register(), role=None)),
    Case("C03", "coordinator", "NOT_FOUND", "layer 0 expert 99 is not an expert of the served model",
         lambda m: coordinator(m, "Register", register(experts=[expert_pb2.ExpertKey(layer="0", expert=99)]),
                               role="mesh")),
    Case("C04", "coordinator", "INVALID_ARGUMENT", "endpoint",
         lambda m: coordinator(m, "Register", register(endpoint="no-port-here"), role="mesh")),
    Case("C05", "coordinator", "INVALID_ARGUMENT", "hidden size",
         lambda m: coordinator(m, "Register", register(hidden_size=HIDDEN + 1), role="mesh")),
    Case("C06", "coordinator", "INVALID_ARGUMENT", "model: expected mixtral with hidden size 32, got llama",
         lambda m: coordinator(m, "Register", register(model_type="llama"), role="mesh")),
    Case("C11", "coordinator", "INVALID_ARGUMENT", "model: layer 0: the replica's gate weights differ",
         lambda m: coordinator(m, "Register", register(gate_probes=[
             expert_pb2.GateProbe(layer="0", values=[100.0, -100.0, 100.0, -100.0])]), role="mesh")),
    Case("C12", "coordinator", "INVALID_ARGUMENT", "group: expected at most 256 bytes, got 1048576",
         lambda m: coordinator(m, "Register", register(group="g" * (1 << 20)), role="mesh")),
    Case("C13", "coordinator", "INVALID_ARGUMENT", "group: expected letters, digits and * : , . _ -, got U+000A",
         lambda m: coordinator(m, "Register", register(group="*:0\n2026-12-07 forged log line"), role="mesh")),
    Case("C10", "coordinator", "OK", '"known": false',
         lambda m: coordinator(m, "Heartbeat", coordinator_pb2.HeartbeatRequest(replica_id="no-such-replica"),
                               role="mesh")),
    Case("C07", "coordinator", "PERMISSION_DENIED", "needs role admin; this token's role is client",
         lambda m: coordinator(m, "SetPruned", coordinator_pb2.SetPrunedRequest(
             expert=expert_pb2.ExpertKey(layer="0", expert=1), pruned=True), role="client")),
    Case("C08", "coordinator", "NOT_FOUND", "layer",
         lambda m: coordinator(m, "SetPruned", coordinator_pb2.SetPrunedRequest(
             expert=expert_pb2.ExpertKey(layer="nope", expert=1), pruned=True))),
    Case("C09", "coordinator", "NOT_FOUND", "no-such-replica",
         lambda m: coordinator(m, "DrainReplica", coordinator_pb2.DrainReplicaRequest(replica_id="no-such-replica"))),
    # HTTP endpoints: the router's /metrics and the coordinator's status page.
    Case("H07", "router-http", "closed", "after", lambda m: slow_header(m.router_http)),
    Case("H08", "router-http", "HTTP 413", "a request body of at most 65536 bytes",
         lambda m: http(m.router_http, b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
                        + b"x" * 100000)),
    Case("H01", "router-http", "HTTP 404", "paths: /metrics", lambda m: get(m.router_http, "/nope")),
    Case("H02", "router-http", "HTTP 405", "only GET", lambda m: get(m.router_http, "/metrics", method="POST")),
    Case("H03", "coordinator-http", "HTTP 404", "no /../../etc/passwd here",
         lambda m: get(m.coordinator_http, "/../../etc/passwd")),
    Case("H04", "coordinator-http", "HTTP 400", "Connection: close",
         lambda m: http(m.coordinator_http, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n")),
    Case("H05", "coordinator-http", "HTTP 400", "Connection: close",
         lambda m: get(m.coordinator_http, "/", extra="X-Big: " + "a" * 200_000 + "\r\n")),
    Case("H06", "router-http", "HTTP 400", "Connection: close",
         lambda m: http(m.router_http, b"GET /metrics HTTP/1.1\r\nContent-Length: -5\r\n\r\n")),
]


def still_serving(mesh: Mesh, service: str):
    if service == "router":
        code, message = forward(mesh, forward_request(tensor([2, HIDDEN])))
    elif service == "expert":
        code, message = compute(mesh, compute_request(tensor([2, HIDDEN])))
    elif service == "coordinator":
        code, message = coordinator(mesh, "GetStatus", coordinator_pb2.GetStatusRequest(), role="client")
    else:
        code, message = get(mesh.router_http if service == "router-http" else mesh.coordinator_http,
                            "/metrics")
        code = "OK" if code == "HTTP 200" else code
    assert code == "OK", f"{service} no longer serves: {code} {message}"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_hostile_request(mesh, case):
    outcome, message = case.run(mesh)
    assert outcome == case.expect, f"{case.id}: {outcome} {message!r}"
    assert case.words in message, f"{case.id}: {message!r}"
    still_serving(mesh, case.service)


def test_calls_beyond_the_cap_are_refused_one_by_one(mesh):
    """A gRPC client's calls beyond --max-concurrent-calls on its connection are refused RESOURCE_EXHAUSTED at once
    (how many depends on how fast the others finish), never the connection: every other call is answered."""
    with mesh.channel("router") as channel:
        stub = router_pb2_grpc.RouterStub(channel)
        calls = [stub.Forward.future(forward_request(tensor([2, HIDDEN])), metadata=bearer("client"), timeout=60)
                 for _ in range(4 * MAX_CONCURRENT_CALLS)]
        outcomes = [grpc_outcome(call.result) for call in calls]
    answered = [answer for code, answer in outcomes if code == "OK"]
    refused = [(code, message) for code, message in outcomes if code != "OK"]
    assert answered, "no call was answered"
    assert all('"shape": ["2", "32"]' in answer for answer in answered), answered[0]
    assert all(code == "RESOURCE_EXHAUSTED" and "too many calls at once on this connection" in message
               for code, message in refused), refused[:3]


def test_readme_table_lists_every_case():
    """README.md's table rows `| ID | service | request | status |` match CASES (ids, services and statuses)."""
    with open(os.path.join(ROOT, "README.md")) as readme:
        text = readme.read()
    rows = re.findall(r"^\| ([RECH]\d\d) \| ([a-z-]+) \| .+? \| `([^`]+)`", text, re.MULTILINE)
    assert {(row[0], row[1], row[2]) for row in rows} == {(c.id, c.service, c.expect) for c in CASES}
    assert len(CASES) >= 30


def test_a_flood_of_idle_http_connections_leaves_the_router_serving(mesh):
    """600 idle connections to the router's HTTP port (its limit is 256): those over the limit are closed at once, the
    router's gRPC API answers meanwhile, and once the flood is gone /metrics answers again."""
    host, port = mesh.router_http.rsplit(":", 1)
    flood = [socket.create_connection((host, int(port)), timeout=30) for _ in range(600)]
    try:
        # The server closes the surplus as it accepts them; the 256 it serves stay open for their request timeout
        # (10 s), so the closures are counted before that.
        closed = 0
        watcher = selectors.DefaultSelector()
        for connection in flood:
            watcher.register(connection, selectors.EVENT_READ)
        deadline = time.monotonic() + 8
        while closed < len(flood) - 256 and time.monotonic() < deadline:
            for key, _ in watcher.select(timeout=0.5):
                try:
                    data = key.fileobj.recv(1)
                except ConnectionResetError:
                    data = b""
                if data == b"":
                    closed += 1
                    watcher.unregister(key.fileobj)
        watcher.close()
        assert closed == len(flood) - 256
        assert forward(mesh, forward_request(tensor([2, HIDDEN])))[0] == "OK"
    finally:
        for connection in flood:
            connection.close()
    deadline = time.monotonic() + 30
    while get(mesh.router_http, "/metrics")[0] != "HTTP 200":  # the closed connections' slots are freed
        assert time.monotonic() < deadline, "/metrics did not answer after the flood"
        time.sleep(0.1)


def test_a_flood_of_grpc_connections_beyond_the_inherited_descriptor_limit_leaves_the_router_serving(
        moemesh_binary, tiny_models):
    """An expert and a router started with a soft limit of 256 descriptors (hard 4,096) raise it to the hard limit
    at start, so 400 idle connections to the router's gRPC port leave it serving, during the flood and after. gRPC's
    C++ core stops accepting on a port for good once `accept` fails with EMFILE (grpc/grpc#20418): at 256 the router
    would never answer again."""
    limited = ["/bin/sh", "-c", 'ulimit -S -n 256 && ulimit -H -n 4096 && exec "$@"', "sh", moemesh_binary]
    common = ["--model", tiny_models["mixtral"], "--port", "0", "--log-level", "error"]
    with started_roles([*limited, "expert", *common], ["expert"]) as expert:
        with started_roles([*limited, "router", "--expert", expert["expert"], *common], ["router"]) as router:
            host, port = router["router"].rsplit(":", 1)
            forward = [moemesh_binary, "forward", "--router", router["router"], "--layer", "0", "--random", "2"]
            flood = [socket.create_connection((host, int(port)), timeout=30) for _ in range(400)]
            try:
                during = subprocess.run(forward, capture_output=True, text=True, timeout=60)
                assert during.returncode == 0, during.stdout + during.stderr
            finally:
                for connection in flood:
                    connection.close()
            after = subprocess.run(forward, capture_output=True, text=True, timeout=60)
            assert after.returncode == 0, after.stdout + after.stderr
