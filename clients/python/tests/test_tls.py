"""TLS between the mesh's services and for clients, over real processes: certificates from `moemesh certs`, a
coordinator with local replicas and a router, all with mutual TLS."""
import http.client
import os
import ssl
import subprocess

import grpc
import numpy as np
import pytest

import moemesh
from conftest import started_roles


@pytest.fixture(scope="module")
def certificates(tmp_path_factory, moemesh_binary):
    folders = {}
    for name in ("mesh", "stranger"):
        folder = tmp_path_factory.mktemp(f"certs-{name}")
        written = subprocess.run([moemesh_binary, "certs", "--out", str(folder), "--hosts", "mesh.internal"],
                                 capture_output=True, text=True)
        assert written.returncode == 0, written.stderr
        folders[name] = folder
    again = subprocess.run([moemesh_binary, "certs", "--out", str(folders["mesh"])], capture_output=True, text=True)
    assert again.returncode != 0 and "exists: give --force" in again.stderr
    return folders


@pytest.fixture(scope="module")
def tls_mesh(certificates, moemesh_binary, tiny_models):
    folder = certificates["mesh"]
    tls = ["--tls-cert", str(folder / "server.pem"), "--tls-key", str(folder / "server-key.pem"),
           "--tls-ca", str(folder / "ca.pem"), "--log-level", "warning"]
    model = tiny_models["qwen3_moe"]
    with started_roles([moemesh_binary, "coordinator", "--model", model, "--port", "0", "--scaler", "local",
                        "--replicas", "1", "--threads", "1", "--http-port", "0", *tls],
                       ["coordinator", "http"]) as coordinator:
        with started_roles([moemesh_binary, "router", "--model", model, "--port", "0", "--coordinator",
                            coordinator["coordinator"], "--http-port", "0", *tls], ["router", "http"]) as router:
            yield {"router": router["router"], "coordinator": coordinator["coordinator"],
                   "router_http": router["http"], "coordinator_http": coordinator["http"]}


def client_tls(folder, with_certificate: bool = True) -> moemesh.TLS:
    if not with_certificate:
        return moemesh.TLS(ca=str(folder / "ca.pem"))
    return moemesh.TLS(ca=str(folder / "ca.pem"), cert=str(folder / "client.pem"), key=str(folder / "client-key.pem"))


def test_a_tls_mesh_answers_like_a_plaintext_one(tls_mesh, certificates, mesh, tiny_models):
    x = np.random.default_rng(5).standard_normal((4, 32)).astype(np.float32)
    with moemesh.Client(tls_mesh["router"], tls=client_tls(certificates["mesh"])) as client:
        secured = client.forward("1", x)
    with mesh(tiny_models["qwen3_moe"]) as plain_router, moemesh.Client(plain_router) as client:
        plain = client.forward("1", x)
    np.testing.assert_array_equal(secured, plain)


@pytest.mark.parametrize("case", ["plaintext", "no client certificate", "certificate of another CA"])
def test_clients_the_mesh_does_not_trust_are_refused(tls_mesh, certificates, case):
    tls = {"plaintext": None, "no client certificate": client_tls(certificates["mesh"], with_certificate=False),
           "certificate of another CA": moemesh.TLS(
               ca=str(certificates["mesh"] / "ca.pem"), cert=str(certificates["stranger"] / "client.pem"),
               key=str(certificates["stranger"] / "client-key.pem"))}[case]
    with moemesh.Client(tls_mesh["router"], tls=tls, timeout=10) as client:
        with pytest.raises(moemesh.MoEMeshError) as error:
            client.forward("1", np.ones((1, 32), np.float32))
    assert error.value.code == grpc.StatusCode.UNAVAILABLE


def test_a_router_for_end_users_takes_server_only_tls_and_a_token(tls_mesh, certificates, moemesh_binary,
                                                                   tiny_models, tmp_path):
    """`--tls-client-auth optional`: end users without a certificate get in with a bearer token (the router still
    calls the mesh with mutual TLS); without a token they are refused, and the option needs --auth-tokens."""
    from test_auth import TOKENS

    folder = certificates["mesh"]
    (tmp_path / "tokens").write_text("".join(f"{role} {token}\n" for role, token in TOKENS.items()))
    tls = ["--tls-cert", str(folder / "server.pem"), "--tls-key", str(folder / "server-key.pem"),
           "--tls-ca", str(folder / "ca.pem"), "--log-level", "warning"]
    router = [moemesh_binary, "router", "--model", tiny_models["qwen3_moe"], "--port", "0", "--coordinator",
              tls_mesh["coordinator"], *tls, "--tls-client-auth", "optional"]
    refused = subprocess.run(router, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "--tls-client-auth optional lets clients in without a certificate: expected --auth-tokens" in refused.stderr
    x = np.random.default_rng(7).standard_normal((3, 32)).astype(np.float32)
    with started_roles([*router, "--auth-tokens", str(tmp_path / "tokens")], ["router"]) as started:
        server_only = client_tls(folder, with_certificate=False)
        with moemesh.Client(started["router"], tls=server_only, token=TOKENS["client"], timeout=30) as client:
            answered = client.forward("1", x)
        with moemesh.Client(tls_mesh["router"], tls=client_tls(folder), timeout=30) as client:
            np.testing.assert_array_equal(answered, client.forward("1", x))
        with moemesh.Client(started["router"], tls=server_only, timeout=30) as client:
            with pytest.raises(moemesh.MoEMeshError) as error:
                client.forward("1", x)
        assert error.value.code == grpc.StatusCode.UNAUTHENTICATED
        with moemesh.Client(started["router"], tls=client_tls(folder), token=TOKENS["client"], timeout=30) as client:
            assert client.forward("1", x).shape == (3, 32)


def test_tools_speak_tls(tls_mesh, certificates, moemesh_binary):
    folder = certificates["mesh"]
    tls = ["--tls-cert", str(folder / "client.pem"), "--tls-key", str(folder / "client-key.pem"),
           "--tls-ca", str(folder / "ca.pem")]
    status = subprocess.run([moemesh_binary, "status", "--coordinator", tls_mesh["coordinator"], "--json", *tls],
                            capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert '"replicas"' in status.stdout
    forward = subprocess.run([moemesh_binary, "forward", "--router", tls_mesh["router"], "--layer", "0",
                              "--random", "3", *tls], capture_output=True, text=True)
    assert forward.returncode == 0, forward.stderr
    # Health checks over TLS (for exec probes): open to any certificate the CA signed, no token needed.
    health = subprocess.run([moemesh_binary, "health", "--endpoint", tls_mesh["router"], *tls],
                            capture_output=True, text=True)
    assert health.returncode == 0 and "SERVING" in health.stdout, health.stdout + health.stderr
    half = subprocess.run([moemesh_binary, "status", "--coordinator", tls_mesh["coordinator"],
                           "--tls-cert", str(folder / "client.pem")], capture_output=True, text=True)
    assert half.returncode != 0 and "a TLS client needs --tls-ca" in half.stderr


def test_up_serves_a_secured_mesh(moemesh_binary, tiny_models, tmp_path):
    from conftest import serving
    from test_auth import TOKENS

    (tmp_path / "tokens").write_text("".join(f"{role} {token}\n" for role, token in TOKENS.items()))
    (tmp_path / "mesh-token").write_text(TOKENS["mesh"])
    folder = tmp_path / "tls"  # created by up
    with serving(moemesh_binary, tiny_models["mixtral"], "--tls", str(folder), "--auth-tokens",
                 str(tmp_path / "tokens"), "--token-file", str(tmp_path / "mesh-token")) as router:
        assert (folder / "ca.pem").exists() and (folder / "client-key.pem").exists()
        x = np.ones((2, 32), np.float32)
        with moemesh.Client(router, token=TOKENS["client"], tls=client_tls(folder)) as client:
            assert client.forward("0", x).shape == (2, 32)
        with moemesh.Client(router, tls=client_tls(folder)) as client:
            with pytest.raises(moemesh.MoEMeshError) as error:
                client.forward("0", x)
            assert error.value.code == grpc.StatusCode.UNAUTHENTICATED


def https_get(endpoint: str, path: str, folder, with_certificate: bool = True) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    if with_certificate:
        context.load_cert_chain(str(folder / "client.pem"), str(folder / "client-key.pem"))
    host, port = endpoint.rsplit(":", 1)
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_metrics_and_the_status_page_are_served_over_tls(tls_mesh, certificates):
    folder = certificates["mesh"]
    status, body = https_get(tls_mesh["router_http"], "/metrics", folder)
    assert status == 200 and b"# TYPE" in body
    status, body = https_get(tls_mesh["coordinator_http"], "/status.json", folder)
    assert status == 200 and b'"replicas"' in body
    # With a CA given, the HTTP endpoints require a client certificate too, as the gRPC servers do.
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        https_get(tls_mesh["coordinator_http"], "/status.json", folder, with_certificate=False)
    # Plain HTTP gets no page.
    host, port = tls_mesh["router_http"].rsplit(":", 1)
    plain = http.client.HTTPConnection(host, int(port), timeout=10)
    with pytest.raises((http.client.HTTPException, ConnectionResetError)):
        plain.request("GET", "/metrics")
        plain.getresponse()


@pytest.fixture(scope="module")
def router_on_every_address(tls_mesh, certificates, moemesh_binary, tiny_models):
    """A second router of the TLS mesh listening on 0.0.0.0, so that it can be dialled as 127.0.0.2, an address
    its certificate does not carry."""
    folder = certificates["mesh"]
    with started_roles([moemesh_binary, "router", "--model", tiny_models["qwen3_moe"], "--host", "0.0.0.0", "--port",
                        "0", "--coordinator", tls_mesh["coordinator"], "--tls-cert", str(folder / "server.pem"),
                        "--tls-key", str(folder / "server-key.pem"), "--tls-ca", str(folder / "ca.pem"),
                        "--log-level", "warning"], ["router"]) as router:
        yield "127.0.0.2:" + router["router"].rsplit(":", 1)[1]


@pytest.mark.parametrize("name, answers", [("mesh.internal", True), ("other.internal", False), (None, False)])
def test_a_server_name_replaces_the_host_dialled(router_on_every_address, certificates, moemesh_binary, name,
                                                 answers):
    """--tls-server-name: a client checks the server's certificate for that name instead of the address dialled
    (replicas reached by pod IP share one name); a name the certificate does not carry is refused, and so is an
    address it does not carry."""
    folder = certificates["mesh"]
    health = subprocess.run(
        [moemesh_binary, "health", "--endpoint", router_on_every_address, "--tls-ca", str(folder / "ca.pem"),
         "--tls-cert", str(folder / "client.pem"), "--tls-key", str(folder / "client-key.pem"),
         *(["--tls-server-name", name] if name else []), "--timeout-ms", "5000"], capture_output=True, text=True)
    assert (health.returncode == 0 and "SERVING" in health.stdout) == answers, health.stdout + health.stderr


def test_probes_take_tls_from_the_environment(router_on_every_address, certificates, moemesh_binary):
    """The k8s component and the compose override give every container MOEMESH_TLS_* variables and run
    `moemesh health` as the probe with no TLS flags: the variables alone must make it speak TLS."""
    folder = certificates["mesh"]
    env = {**os.environ, "MOEMESH_TLS_CA": str(folder / "ca.pem"), "MOEMESH_TLS_CERT": str(folder / "client.pem"),
           "MOEMESH_TLS_KEY": str(folder / "client-key.pem"), "MOEMESH_TLS_SERVER_NAME": "mesh.internal"}
    health = subprocess.run([moemesh_binary, "health", "--endpoint", router_on_every_address],
                            capture_output=True, text=True, env=env)
    assert health.returncode == 0 and "SERVING" in health.stdout, health.stdout + health.stderr
