"""Fixtures: the `moemesh` binary, tiny checkpoints made by transformers, and meshes serving them (`moemesh up`)."""
import contextlib
import os
import queue
import re
import subprocess
import sys
import threading

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, HERE)

import make_tiny_models  # noqa: E402

ARCHITECTURES = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3", "gpt_oss", "switch"]


@pytest.fixture(scope="session")
def moemesh_binary() -> str:
    path = os.environ.get("MOEMESH_BINARY", os.path.join(ROOT, ".build", "debug", "moemesh"))
    if not os.access(path, os.X_OK):
        pytest.fail(f"no moemesh binary at {path}: build it (swift build) or set MOEMESH_BINARY")
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """arch → folder of a tiny f32 checkpoint; `mixtral-bf16` → the Mixtral one in bf16."""
    out = tmp_path_factory.mktemp("tiny")
    folders = {}
    for arch, config in make_tiny_models.configs(layers=2).items():
        folders[arch] = make_tiny_models.write(str(out / "f32"), arch, config, make_tiny_models.torch.float32)
    bf16 = make_tiny_models.configs(layers=2)["mixtral"]
    folders["mixtral-bf16"] = make_tiny_models.write(str(out / "bf16"), "mixtral", bf16, make_tiny_models.torch.bfloat16)
    return folders


@contextlib.contextmanager
def started(arguments: list, role: str, env: dict | None = None):
    """A process started with `arguments` (standard output read on a thread; `env`, or this one's environment);
    yields the endpoint of its ready line `<role> listening on HOST:PORT`, and stops it (SIGTERM, then SIGKILL after
    30 s) at the end."""
    with started_roles(arguments, [role], env=env) as endpoints:
        yield endpoints[role]


@contextlib.contextmanager
def started_roles(arguments: list, roles: list, env: dict | None = None):
    """Like `started`, waiting for a ready line of each of `roles` (e.g. a router and its `http` endpoint); yields
    role → HOST:PORT."""
    process = subprocess.Popen(arguments, stdout=subprocess.PIPE, text=True, env=env)
    lines: "queue.Queue[str | None]" = queue.Queue()

    def read():
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    endpoints = {}
    try:
        while len(endpoints) < len(roles):
            line = lines.get(timeout=300)
            if line is None:
                raise RuntimeError(f"{' '.join(arguments[:2])} exited with {process.wait()} before it was ready")
            if (match := re.match(r"(\S+) listening on (\S+)", line)) and match.group(1) in roles:
                endpoints[match.group(1)] = match.group(2)
        yield endpoints
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serving(binary: str, model: str, *extra: str, env: dict | None = None):
    """`moemesh up` on free ports serving `model` (in `env`, or this environment); yields the router's HOST:PORT."""
    return started(
        [binary, "up", "--model", model, "--port", "0", "--coordinator-port", "0", "--replicas", "1",
         "--threads", "1", "--log-level", "warning", *extra], "router", env=env)


@pytest.fixture
def mesh(moemesh_binary):
    """mesh(model_folder, *extra_flags) → a context manager yielding the router's address."""
    return lambda model, *extra: serving(moemesh_binary, model, *extra)


@pytest.fixture(scope="session")
def cpp_client() -> str:
    """clients/cpp built with CMake into .build-cpp (Debian's libgrpc++-dev, libprotobuf-dev, protobuf-compiler-grpc)."""
    build = os.path.join(ROOT, ".build-cpp")
    for command in (["cmake", "-S", os.path.join(ROOT, "clients", "cpp"), "-B", build, "-DCMAKE_BUILD_TYPE=Release"],
                    ["cmake", "--build", build, "-j2"]):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return os.path.join(build, "moemesh-forward")
