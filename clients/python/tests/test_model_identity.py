"""A client refuses to run a model other than the one the mesh serves (docs/protocol.md, "Which model"): `attach`
and `moemesh.generate` compare the model type, hidden size, experts and each layer's gate probe with the local
model's, and name what differs; `verify=False` / `--no-verify` attach anyway. Over a real mesh serving the tiny f32
Mixtral."""
import copy

import pytest
import torch

import make_tiny_models
import moemesh
import moemesh.transformers
from make_tiny_models import model_class


def local_model(arch: str, seed: int = 0, **overrides) -> torch.nn.Module:
    config = copy.deepcopy(make_tiny_models.configs(layers=2)[arch])
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    return model_class(arch).from_config(config).eval()


@pytest.fixture(scope="module")
def mixtral_mesh(tiny_models, moemesh_binary):
    from conftest import serving

    with serving(moemesh_binary, tiny_models["mixtral"]) as router:
        yield router


def refusal(router: str, model: torch.nn.Module) -> str:
    with moemesh.Client(router) as client:
        with pytest.raises(moemesh.transformers.ModelMismatch) as refused:
            moemesh.transformers.attach(model, client)
    # Nothing was replaced: the refused model still runs its own experts.
    assert not any(isinstance(block, moemesh.transformers.MeshMoE) for block in model.modules())
    return str(refused.value)


def test_a_model_of_another_type_and_size_is_refused_naming_both(mixtral_mesh):
    message = refusal(mixtral_mesh, local_model("qwen3_moe", hidden_size=64))
    assert "model type: the mesh serves mixtral, this model is qwen3_moe" in message
    assert "hidden size: the mesh's is 32, this model's 64" in message
    assert "verify=False" in message


def test_a_model_of_another_width_is_refused_at_attach(mixtral_mesh):
    message = refusal(mixtral_mesh, local_model("mixtral", hidden_size=48))
    assert "hidden size: the mesh's is 32, this model's 48" in message


def test_a_model_with_other_experts_is_refused(mixtral_mesh):
    assert "experts: the mesh's layer 0 has 4, this model's 8" in refusal(
        mixtral_mesh, local_model("mixtral", num_local_experts=8))
    assert "layer 0: the mesh routes top-2, this model top-1" in refusal(
        mixtral_mesh, local_model("mixtral", num_experts_per_tok=1))


def test_the_same_config_with_other_weights_is_refused(mixtral_mesh):
    message = refusal(mixtral_mesh, local_model("mixtral", seed=1))
    assert "layer 0: the gate weights differ" in message and "layer 1: the gate weights differ" in message


def test_the_served_model_attaches_in_f32_and_in_bf16(tiny_models, mixtral_mesh):
    for folder, dtype in ((tiny_models["mixtral"], torch.float32), (tiny_models["mixtral-bf16"], torch.bfloat16)):
        model = model_class("mixtral").from_pretrained(folder, dtype=dtype).eval()
        with moemesh.Client(mixtral_mesh) as client:
            moemesh.transformers.attach(model, client)
        assert sum(isinstance(block, moemesh.transformers.MeshMoE) for block in model.modules()) == 2


def test_verify_false_attaches_another_model(mixtral_mesh):
    model = local_model("mixtral", seed=1)
    with moemesh.Client(mixtral_mesh) as client:
        moemesh.transformers.attach(model, client, verify=False)
    assert sum(isinstance(block, moemesh.transformers.MeshMoE) for block in model.modules()) == 2


def test_described_gate_probes_are_the_local_gates_probes(tiny_models, mixtral_mesh):
    model = model_class("mixtral").from_pretrained(tiny_models["mixtral"]).eval()
    with moemesh.Client(mixtral_mesh) as client:
        described = client.describe()
    for layer in described.layers:
        local = moemesh.transformers.gate_probe(model.get_submodule(f"model.layers.{layer.name}.mlp.gate").weight)
        assert len(layer.gate_probe) == 4
        # The router's f32 sums of the same f32 weights: equal to within f32 rounding of the sum.
        assert max(abs(x - y) for x, y in zip(local, layer.gate_probe)) <= 1e-5 * max(map(abs, local))


def test_generate_refuses_another_model_unless_told(tmp_path, mixtral_mesh, capsys):
    from moemesh import generate as command

    folder = make_tiny_models.write(str(tmp_path), "mixtral", make_tiny_models.configs(layers=2)["mixtral"],
                                    torch.float32, seed=1)
    arguments = ["--model", folder, "--router", mixtral_mesh, "--prompt-ids", "1,5", "--max-new-tokens", "2",
                 "--warmup", "0"]
    assert command.main(arguments) == 1
    assert "layer 0: the gate weights differ" in capsys.readouterr().err
    assert command.main([*arguments, "--no-verify"]) == 0
