"""moemesh.Client against a real mesh: dtypes and shapes in and out, routing, the stream and unary paths, errors."""
import grpc
import numpy as np
import pytest
import torch

import moemesh
import moemesh.transformers
from make_tiny_models import model_class


@pytest.fixture(scope="module")
def router(tiny_models, moemesh_binary):
    from conftest import serving

    with serving(moemesh_binary, tiny_models["qwen2_moe"]) as address:
        yield address


def test_describe(router):
    with moemesh.Client(router) as client:
        model = client.describe()
    assert model.model_type == "qwen2_moe"
    assert model.hidden_size == 32
    assert [layer.name for layer in model.layers] == ["0", "1"]
    assert all(layer.num_experts == 4 and layer.top_k == 2 and layer.shared_expert for layer in model.layers)


def test_dtypes_and_shapes_come_back_as_given(router):
    x = np.random.default_rng(0).standard_normal((2, 3, 32)).astype(np.float32)
    with moemesh.Client(router) as client:
        y32 = client.forward("0", x)
        assert isinstance(y32, np.ndarray) and y32.dtype == np.float32 and y32.shape == (2, 3, 32)
        y16 = client.forward("0", x.astype(np.float16))
        assert y16.dtype == np.float16 and y16.shape == (2, 3, 32)
        assert np.abs(y16.astype(np.float32) - y32).max() <= 1e-2 * np.abs(y32).max()
        t = client.forward("0", torch.from_numpy(x).to(torch.bfloat16).reshape(6, 32))
        assert isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16 and tuple(t.shape) == (6, 32)
        assert (t.float() - torch.from_numpy(y32).reshape(6, 32)).abs().max() <= 3e-2 * np.abs(y32).max()


def test_stream_and_unary_answers_are_identical_and_routing_comes_back(router):
    x = np.random.default_rng(1).standard_normal((5, 32)).astype(np.float32)
    with moemesh.Client(router, stream=True) as streamed, moemesh.Client(router, stream=False) as unary:
        a = streamed.forward("1", x, return_routing=True)
        b = unary.forward("1", x, return_routing=True)
    np.testing.assert_array_equal(a.output, b.output)
    assert a.routing.ids.shape == (5, 2) and a.routing.weights.shape == (5, 2)
    np.testing.assert_array_equal(a.routing.ids, b.routing.ids)
    assert set(a.routing.ids.flatten().tolist()) <= {0, 1, 2, 3}


def test_errors_keep_the_status_and_the_message(router):
    x = np.zeros((2, 32), np.float32)
    for stream in (True, False):
        with moemesh.Client(router, stream=stream) as client:
            with pytest.raises(moemesh.MoEMeshError) as error:
                client.forward("7", x)
            assert error.value.code == grpc.StatusCode.NOT_FOUND
            assert "7" in error.value.message
            with pytest.raises(moemesh.MoEMeshError) as error:
                client.forward("0", np.zeros((2, 31), np.float32))
            assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "expected 32, got 31" in error.value.message
            # The stream survives a failed request.
            assert client.forward("0", x).shape == (2, 32)
    with moemesh.Client(router) as client:
        with pytest.raises(TypeError, match="float64"):
            client.forward("0", np.zeros((2, 32)))
        with pytest.raises(ValueError, match=r"\[T, H\] or \[B, S, H\]"):
            client.forward("0", np.zeros((32,), np.float32))


def test_unreachable_router_is_an_error_with_its_status():
    with moemesh.Client("127.0.0.1:1", timeout=5) as client:
        with pytest.raises(moemesh.MoEMeshError) as error:
            client.describe()
    assert error.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_attach_refuses_router_logits_and_models_the_router_does_not_serve(router, tiny_models):
    model = model_class("qwen2_moe").from_pretrained(tiny_models["qwen2_moe"]).eval()
    with moemesh.Client(router) as client:
        moemesh.transformers.attach(model, client)
        with pytest.raises(ValueError, match="router logits"):
            model(torch.tensor([[1, 2, 3]]), output_router_logits=True)
        deep = model_class("deepseek_v3").from_pretrained(tiny_models["deepseek_v3"]).eval()
        # Layers 1 and 2 (its first is dense): the router serves 0 and 1.
        with pytest.raises(ValueError, match="does not serve"):
            moemesh.transformers.attach(deep, client)


def test_mesh_layer_names():
    assert moemesh.transformers.mesh_layer_name("model.layers.12.mlp") == "12"
    assert moemesh.transformers.mesh_layer_name("encoder.block.3.layer.1.mlp") == "encoder.3"
    assert moemesh.transformers.mesh_layer_name("decoder.block.1.layer.2.mlp") == "decoder.1"
    assert moemesh.transformers.mesh_layer_name("lm_head") is None


def test_a_message_above_the_limit_is_refused_with_resource_exhausted(moemesh_binary, tiny_models):
    from conftest import started

    model = tiny_models["qwen2_moe"]
    with started([moemesh_binary, "expert", "--model", model, "--experts", "*:*", "--port", "0"], "expert") as expert:
        with started([moemesh_binary, "router", "--model", model, "--port", "0", "--expert", expert,
                      "--max-message-mib", "1"], "router") as router:
            under = np.zeros(((1 << 20) // 128 - 8, 32), np.float32)  # just under 1 MiB
            over = np.zeros(((3 << 19) // 128, 32), np.float32)  # 1.5 MiB
            for stream in (True, False):
                with moemesh.Client(router, stream=stream) as client:
                    assert client.forward("0", under).shape == under.shape
                    with pytest.raises(moemesh.MoEMeshError) as error:
                        client.forward("0", over)
                    assert error.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert error.value.message.startswith(
                        "hidden_states: 1.5 MiB, above this service's limit of 1.0 MiB (--max-message-mib)")
                    assert client.forward("0", under).shape == under.shape  # still serving


def test_a_mesh_of_int8_experts_says_so_and_stays_within_2e_2_of_f32(router, tiny_models, moemesh_binary):
    """`moemesh up --precision`: DescribeModel lists every expert's precision; the answers move by the quantisation
    error only (int8 per-channel, bf16 for the shared experts of layer 1)."""
    from conftest import serving

    x = np.random.default_rng(5).standard_normal((3, 4, 32)).astype(np.float32)
    with moemesh.Client(router) as client:
        reference = client.forward("0", x)
    with serving(moemesh_binary, tiny_models["qwen2_moe"], "--precision", "*:*=int8,1:shared=bf16") as address:
        with moemesh.Client(address) as client:
            model = client.describe()
            quantised = client.forward("0", x)
    expected = {(layer, expert): {"int8": 1} for layer in ("0", "1") for expert in (0, 1, 2, 3, -1)}
    expected[("1", -1)] = {"bf16": 1}
    assert model.precisions == expected
    error = np.linalg.norm(quantised - reference) / np.linalg.norm(reference)
    assert 0 < error < 2e-2


def test_the_messages_docs_clients_md_quotes_are_the_real_ones(router, tiny_models, moemesh_binary):
    """Every server message docs/clients.md quotes is what the mesh says (the router serves layers 0 and 1, H = 32)."""
    import os
    import re

    from conftest import ROOT

    with open(os.path.join(ROOT, "docs", "clients.md")) as file:
        text = " ".join(file.read().split())
    unknown_layer = re.search(r"`(NOT_FOUND: layer '7' [^`]+)`", text).group(1)
    hidden_size = re.search(r"`(INVALID_ARGUMENT: hidden_states: hidden size: [^`]+)`", text).group(1)
    mismatch = re.search(r"`(attach: the mesh at 127\.0\.0\.1:50051 serves another model: [^`]+)`", text).group(1)
    with moemesh.Client(router) as client:
        with pytest.raises(moemesh.MoEMeshError) as refused:
            client.forward("7", np.zeros((1, 32), np.float32))
        assert str(refused.value) == unknown_layer
        with pytest.raises(moemesh.MoEMeshError) as refused:
            client.forward("0", np.zeros((1, 31), np.float32))
        assert str(refused.value) == hidden_size
    # The model mismatch quoted: a Qwen3-MoE of hidden size 64 against a mesh of the tiny Mixtral.
    from conftest import serving
    from test_model_identity import local_model

    model = local_model("qwen3_moe", hidden_size=64)
    with serving(moemesh_binary, tiny_models["mixtral"]) as mixtral, moemesh.Client(mixtral) as client:
        with pytest.raises(moemesh.transformers.ModelMismatch) as refused:
            moemesh.transformers.attach(model, client)
        assert str(refused.value).replace(mixtral, "127.0.0.1:50051") == mismatch
