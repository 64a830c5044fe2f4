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
