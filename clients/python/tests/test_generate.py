"""Greedy generation with the experts on a mesh equals the same model run locally: the tokens exactly, the logits of
every step within 1e-4 relative (f32); in bf16 within the stated tolerance."""
import pytest
import torch

import moemesh
import moemesh.transformers
from conftest import ARCHITECTURES
from make_tiny_models import model_class

PROMPT = torch.tensor([[1, 5, 9, 3, 7, 2, 11, 4]])


def generate(model, arch: str):
    extra = {"decoder_start_token_id": 0} if arch == "switch" else {}
    with torch.no_grad():
        return model.generate(
            PROMPT, max_new_tokens=16, do_sample=False, output_logits=True, return_dict_in_generate=True,
            pad_token_id=0, eos_token_id=None, **extra)


def worst_relative_error(expected, actual) -> float:
    return max(((x.float() - y.float()).norm() / x.float().norm()).item() for x, y in zip(expected, actual))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_generation_through_the_mesh_equals_local(arch, tiny_models, mesh):
    folder = tiny_models[arch]
    local = model_class(arch).from_pretrained(folder).eval()
    meshed = model_class(arch).from_pretrained(folder).eval()
    with mesh(folder) as router, moemesh.Client(router) as client:
        timing = moemesh.transformers.attach(meshed, client)
        # No expert weights left in the client: every sparse block was replaced.
        assert not [name for name, _ in meshed.named_modules() if name.endswith("experts")]
        expected, actual = generate(local, arch), generate(meshed, arch)
    assert actual.sequences.tolist() == expected.sequences.tolist()
    assert len(actual.logits) == 16
    assert worst_relative_error(expected.logits, actual.logits) <= 1e-4
    # Every step called the mesh once per MoE layer (Switch: its encoder layer once, its decoder layer each step).
    layers = len({block.layer for block in meshed.modules() if isinstance(block, moemesh.transformers.MeshMoE)})
    assert timing.calls == (1 + 16 if arch == "switch" else 16 * layers)


# bf16: the client computes attention in bf16 and so does the reference; the mesh computes its experts in f32 from
# the bf16 weights and answers in bf16, where torch's bf16 kernels round in between. The logits of the same steps
# agree within 2e-2 relative; the first tokens (before any near-tie could diverge) are equal.
BF16_LOGITS_TOLERANCE = 2e-2


def test_bf16_generation_within_tolerance(tiny_models, mesh):
    folder = tiny_models["mixtral-bf16"]
    local = model_class("mixtral").from_pretrained(folder, dtype=torch.bfloat16).eval()
    meshed = model_class("mixtral").from_pretrained(folder, dtype=torch.bfloat16).eval()
    with mesh(folder) as router, moemesh.Client(router) as client:
        moemesh.transformers.attach(meshed, client)
        expected, actual = generate(local, "mixtral"), generate(meshed, "mixtral")
    assert actual.sequences.dtype == expected.sequences.dtype
    steps = next(
        (step for step, (x, y) in enumerate(zip(expected.sequences[0, 8:], actual.sequences[0, 8:])) if x != y), 16)
    print(f"bf16: tokens equal for {steps} of 16 steps; worst logits error "
          f"{worst_relative_error(expected.logits[:max(steps, 1)], actual.logits[:max(steps, 1)]):.2e}")
    assert steps >= 4
    assert worst_relative_error(expected.logits[:steps], actual.logits[:steps]) <= BF16_LOGITS_TOLERANCE


def test_generate_command_prints_the_same_tokens_and_the_mesh_time(tiny_models, mesh, capsys):
    import json

    from moemesh import generate as command

    folder = tiny_models["olmoe"]
    arguments = ["--model", folder, "--prompt-ids", "1,5,9,3", "--max-new-tokens", "6", "--json", "--warmup", "0"]
    assert command.main([*arguments, "--local"]) == 0
    local = json.loads(capsys.readouterr().out)
    with mesh(folder) as router:
        assert command.main([*arguments, "--router", router]) == 0
    meshed = json.loads(capsys.readouterr().out)
    assert meshed["tokens"] == local["tokens"] and len(local["tokens"]) == 6
    assert meshed["mesh_calls"] == 6 * 2
    assert meshed["mesh_ms_per_token"] > 0 and meshed["tokens_per_second"] > 0
    assert command.main(["--model", folder, "--router", "127.0.0.1:1", "--prompt-ids", "1", "--warmup", "0"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err
