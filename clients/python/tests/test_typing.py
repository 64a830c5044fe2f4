"""Types a user's IDE understands: `mypy --strict` is clean on the package (generated stubs included) and on every
Python example in README.md and the docs, and `forward` gives numpy for numpy, torch for torch, and with
`return_routing=True` a `ForwardResult` whose `routing` is not optional (`assert_type` fails mypy otherwise)."""
import os
import re
import subprocess
import sys

from conftest import ROOT

DOCS = ["README.md", "docs/clients.md", "docs/protocol.md", "clients/python/README.md"]

USER_SCRIPT = '''
from typing import Any, assert_type

import numpy as np
import numpy.typing as npt
import torch

import moemesh

with moemesh.Client("127.0.0.1:50051", wait_for_ready=True) as client:
    array = np.zeros((2, 32), np.float32)
    assert_type(client.forward("0", array), npt.NDArray[Any])
    assert_type(client.forward(0, torch.zeros(2, 32), timeout=1.5), torch.Tensor)
    result = client.forward("0", torch.zeros(2, 32), return_routing=True, timeout=None)
    assert_type(result, moemesh.ForwardResult[torch.Tensor])
    assert_type(result.routing, moemesh.Routing)
    assert_type(result.routing.ids, npt.NDArray[np.int32])
    assert_type(client.describe().layers[0].gate_probe, tuple[float, ...])
'''


def python_examples() -> list[tuple[str, str]]:
    """(where, code) of every ```python block of the docs."""
    examples = []
    for name in DOCS:
        with open(os.path.join(ROOT, name)) as file:
            for index, code in enumerate(re.findall(r"^```python\n(.*?)^```", file.read(), re.S | re.M)):
                examples.append((f"{name} example {index + 1}", code))
    return examples


def mypy(paths: list[str], tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "mypy-cache"), *paths],
        capture_output=True, text=True, cwd=os.path.join(ROOT, "clients", "python"))


def test_mypy_strict_is_clean_on_the_package_the_docs_and_a_user_script(tmp_path):
    examples = python_examples()
    assert len(examples) >= 6, [where for where, _ in examples]
    paths = [os.path.join(ROOT, "clients", "python", "src", "moemesh")]
    for index, (where, code) in enumerate(examples):
        path = tmp_path / f"example_{index}.py"
        path.write_text(f"# {where}\n{code}")
        paths.append(str(path))
    script = tmp_path / "user_script.py"
    script.write_text(USER_SCRIPT)
    paths.append(str(script))
    checked = mypy(paths, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_mypy_catches_a_wrong_type(tmp_path):
    """The check above can fail: a numpy call's output is not a tensor."""
    script = tmp_path / "wrong.py"
    script.write_text(USER_SCRIPT.replace(
        'assert_type(client.forward("0", array), npt.NDArray[Any])',
        'assert_type(client.forward("0", array), torch.Tensor)'))
    checked = mypy([str(script)], tmp_path)
    assert checked.returncode == 1 and "[assert-type]" in checked.stdout, checked.stdout
