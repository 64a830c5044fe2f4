"""The C++ client (clients/cpp) against a real mesh: its answer equals the Python client's for the same bytes in."""
import subprocess

import numpy as np

import moemesh


def test_cpp_client_answers_like_the_python_client(cpp_client, tiny_models, mesh, tmp_path):
    x = np.random.default_rng(3).standard_normal((6, 32)).astype(np.float32)
    (tmp_path / "in.f32").write_bytes(x.tobytes())
    with mesh(tiny_models["mixtral"]) as router:
        run = subprocess.run(
            [cpp_client, "--router", router, "--layer", "1", "--input", str(tmp_path / "in.f32"),
             "--output", str(tmp_path / "out.f32")], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        with moemesh.Client(router) as client:
            expected = client.forward("1", x)
        failed = subprocess.run(
            [cpp_client, "--router", router, "--layer", "9", "--tokens", "2"], capture_output=True, text=True)
    assert "model mixtral, hidden size 32" in run.stdout and "layer 1: 6 tokens, output [6, 32]" in run.stdout
    actual = np.frombuffer((tmp_path / "out.f32").read_bytes(), np.float32).reshape(6, 32)
    assert np.abs(actual - expected).max() <= 1e-6 * np.abs(expected).max()
    assert failed.returncode == 1
    assert "Forward failed: NOT_FOUND" in failed.stderr and "9" in failed.stderr


def test_cpp_client_unreachable_router_exits_with_its_status(cpp_client):
    run = subprocess.run([cpp_client, "--router", "127.0.0.1:1", "--timeout-s", "5"], capture_output=True, text=True)
    assert run.returncode == 1
    assert "DescribeModel failed: UNAVAILABLE" in run.stderr


def test_cpp_client_speaks_tls_and_tokens(cpp_client, moemesh_binary, tiny_models, tmp_path):
    from conftest import serving
    from test_auth import TOKENS

    (tmp_path / "tokens").write_text("".join(f"{role} {token}\n" for role, token in TOKENS.items()))
    (tmp_path / "mesh-token").write_text(TOKENS["mesh"])
    (tmp_path / "client-token").write_text(TOKENS["client"] + "\n")
    certs = tmp_path / "tls"
    x = np.random.default_rng(4).standard_normal((3, 32)).astype(np.float32)
    (tmp_path / "in.f32").write_bytes(x.tobytes())
    tls = ["--tls-ca", str(certs / "ca.pem"), "--tls-cert", str(certs / "client.pem"),
           "--tls-key", str(certs / "client-key.pem")]
    with serving(moemesh_binary, tiny_models["mixtral"], "--tls", str(certs), "--auth-tokens",
                 str(tmp_path / "tokens"), "--token-file", str(tmp_path / "mesh-token")) as router:
        run = subprocess.run(
            [cpp_client, "--router", router, "--layer", "0", "--input", str(tmp_path / "in.f32"),
             "--output", str(tmp_path / "out.f32"), "--token-file", str(tmp_path / "client-token"), *tls],
            capture_output=True, text=True)
        no_token = subprocess.run([cpp_client, "--router", router, *tls], capture_output=True, text=True)
        plaintext = subprocess.run(
            [cpp_client, "--router", router, "--token-file", str(tmp_path / "client-token"), "--timeout-s", "5"],
            capture_output=True, text=True)
        client_tls = moemesh.TLS(ca=str(certs / "ca.pem"), cert=str(certs / "client.pem"),
                                 key=str(certs / "client-key.pem"))
        with moemesh.Client(router, token=TOKENS["client"], tls=client_tls) as client:
            expected = client.forward("0", x)
    assert run.returncode == 0, run.stderr
    actual = np.frombuffer((tmp_path / "out.f32").read_bytes(), np.float32).reshape(3, 32)
    assert np.abs(actual - expected).max() <= 1e-6 * np.abs(expected).max()
    assert no_token.returncode == 1 and "DescribeModel failed: UNAUTHENTICATED" in no_token.stderr
    assert plaintext.returncode == 1 and "DescribeModel failed: UNAVAILABLE" in plaintext.stderr
