"""Bearer tokens with roles over real processes: a coordinator (local replicas) and a router started with
--auth-tokens; the mesh's own calls carry a mesh token (--token-file)."""
import os
import secrets
import subprocess
import time

import grpc
import numpy as np
import pytest

import moemesh
from conftest import started

TOKENS = {role: f"{role}-{secrets.token_hex(12)}" for role in ("client", "admin", "mesh")}


@pytest.fixture(scope="module")
def secured_mesh(tmp_path_factory, moemesh_binary, tiny_models):
    folder = tmp_path_factory.mktemp("auth")
    tokens_file = folder / "tokens"
    tokens_file.write_text("# role token\n" + "".join(f"{role} {token}\n" for role, token in TOKENS.items()))
    mesh_token = folder / "mesh-token"
    mesh_token.write_text(TOKENS["mesh"] + "\n")
    model = tiny_models["olmoe"]
    secured = ["--auth-tokens", str(tokens_file), "--token-file", str(mesh_token), "--log-level", "warning"]
    with started([moemesh_binary, "coordinator", "--model", model, "--port", "0", "--scaler", "local",
                  "--replicas", "1", "--threads", "1", *secured], "coordinator") as coordinator:
        with started([moemesh_binary, "router", "--model", model, "--port", "0", "--coordinator", coordinator,
                      *secured], "router") as router:
            yield {"router": router, "coordinator": coordinator, "tokens_file": tokens_file}


def forward_once(client: moemesh.Client) -> np.ndarray:
    return client.forward("0", np.ones((2, 32), np.float32))


def test_roles_on_the_router(secured_mesh, moemesh_binary):
    router = secured_mesh["router"]
    with moemesh.Client(router, token=TOKENS["client"]) as client:
        assert forward_once(client).shape == (2, 32)
    with moemesh.Client(router, token=TOKENS["admin"]) as client:
        assert forward_once(client).shape == (2, 32)
    for token, code, words in [
        (None, grpc.StatusCode.UNAUTHENTICATED, "expected metadata 'authorization: Bearer TOKEN', got none"),
        ("not-a-token-of-this-mesh", grpc.StatusCode.UNAUTHENTICATED, "not one this service accepts"),
        (TOKENS["mesh"], grpc.StatusCode.PERMISSION_DENIED, "needs role client or admin; this token's role is mesh"),
    ]:
        for stream in (True, False):
            with moemesh.Client(router, token=token, stream=stream) as client:
                with pytest.raises(moemesh.MoEMeshError) as error:
                    forward_once(client)
            assert error.value.code == code and words in error.value.message
    # Health checks stay open: no token.
    health = subprocess.run([moemesh_binary, "health", "--endpoint", router], capture_output=True, text=True)
    assert health.returncode == 0 and "SERVING" in health.stdout


def test_admin_actions_need_admin(secured_mesh, moemesh_binary, tmp_path):
    token_file = tmp_path / "token"

    def admin(token: str) -> subprocess.CompletedProcess:
        token_file.write_text(token)
        return subprocess.run(
            [moemesh_binary, "admin", "prune", "--coordinator", secured_mesh["coordinator"], "--layer", "0",
             "--expert", "1", "--token-file", str(token_file)], capture_output=True, text=True)

    refused = admin(TOKENS["client"])
    assert refused.returncode != 0
    assert "needs role admin; this token's role is client" in refused.stderr + refused.stdout
    allowed = admin(TOKENS["admin"])
    assert allowed.returncode == 0, allowed.stderr
    status = subprocess.run(
        [moemesh_binary, "status", "--coordinator", secured_mesh["coordinator"], "--json"],
        capture_output=True, text=True, env={**os.environ, "MOEMESH_TOKEN": TOKENS["client"]})
    assert status.returncode == 0, status.stderr
    assert '"pruned":true' in status.stdout.replace(" ", "")


def test_a_stranger_cannot_join_the_mesh(secured_mesh):
    channel = grpc.insecure_channel(secured_mesh["coordinator"])
    register = channel.unary_unary(
        "/moemesh.v1.Coordinator/Register", request_serializer=lambda request: request,
        response_deserializer=lambda data: data)
    # A RegisterRequest naming an endpoint of the stranger's (field 1: endpoint, field 2: group).
    body = b"\x0a\x0f127.0.0.1:65000\x12\x03*:0"
    for metadata, code in [(None, grpc.StatusCode.UNAUTHENTICATED),
                           ((("authorization", f"Bearer {TOKENS['client']}"),), grpc.StatusCode.PERMISSION_DENIED),
                           ((("authorization", f"Bearer {TOKENS['admin']}"),), grpc.StatusCode.PERMISSION_DENIED)]:
        with pytest.raises(grpc.RpcError) as error:
            register(body, metadata=metadata, timeout=10)
        assert error.value.code() == code
    channel.close()


def test_a_token_added_to_the_file_works_without_a_restart(secured_mesh):
    newcomer = f"client-{secrets.token_hex(12)}"
    router = secured_mesh["router"]
    with moemesh.Client(router, token=newcomer) as client:
        with pytest.raises(moemesh.MoEMeshError) as error:
            forward_once(client)
        assert error.value.code == grpc.StatusCode.UNAUTHENTICATED
    tokens_file = secured_mesh["tokens_file"]
    tokens_file.write_text(tokens_file.read_text() + f"client {newcomer}\n")
    deadline = time.monotonic() + 30
    while True:
        with moemesh.Client(router, token=newcomer) as client:
            try:
                assert forward_once(client).shape == (2, 32)
                break
            except moemesh.MoEMeshError as error:
                assert error.code == grpc.StatusCode.UNAUTHENTICATED
                assert time.monotonic() < deadline, "the new token was not taken up within 30 s"
                time.sleep(0.2)
