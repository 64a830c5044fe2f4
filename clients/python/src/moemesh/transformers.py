"""Hugging Face transformers models with their experts on a mesh: `attach(model, client)` replaces every sparse MoE
block of a loaded model, in place, with a module that sends the block's input to the router for the matching mesh
layer and returns what the original block returned. Attention, norms, dense layers, the embeddings, the LM head and
the KV cache stay in the client, unchanged; `model.generate(...)` works as before.

Architectures (transformers 5): Mixtral, Qwen2-MoE (its gated shared expert is served by the mesh too), Qwen3-MoE,
OLMoE, DeepSeek-V3 (dense first layers stay local), GPT-OSS and Switch Transformers (encoder and decoder).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from moemesh.client import Client

# Sparse MoE block classes, by name, and what their forward returns: the output alone, or (output, router scores
# [T, E]) as GPT-OSS's does.
BLOCKS = {
    "MixtralSparseMoeBlock": "output",
    "Qwen2MoeSparseMoeBlock": "output",
    "Qwen3MoeSparseMoeBlock": "output",
    "OlmoeSparseMoeBlock": "output",
    "DeepseekV3MoE": "output",
    "GptOssMLP": "output_and_scores",
    "SwitchTransformersSparseMLP": "output",
}


@dataclass
class MeshTime:
    """Time spent in mesh calls, over the attached model's life (`reset` starts again)."""

    calls: int = 0
    seconds: float = 0.0
    per_layer: dict = field(default_factory=dict)

    def reset(self) -> None:
        self.calls, self.seconds, self.per_layer = 0, 0.0, {}


class MeshMoE(torch.nn.Module):
    """A sparse MoE block served by a mesh: `forward(hidden_states [B, S, H])` is one call of layer `layer`."""

    def __init__(self, client: Client, layer: str, kind: str, num_experts: int, replaced: str, timing: MeshTime):
        super().__init__()
        self.client = client
        self.layer = layer
        self.kind = kind
        self.num_experts = num_experts
        self.replaced = replaced
        self.timing = timing

    def extra_repr(self) -> str:
        return f"layer={self.layer!r}, target={self.client.target!r}, replaces={self.replaced}"

    def forward(self, hidden_states: torch.Tensor):
        started = time.perf_counter()
        if self.kind == "output_and_scores":
            result = self.client.forward(self.layer, hidden_states, return_routing=True)
            output = result.output
            ids = torch.from_numpy(result.routing.ids.astype("int64"))
            weights = torch.from_numpy(result.routing.weights).to(hidden_states.dtype)
            scores = torch.zeros(ids.shape[0], self.num_experts, dtype=hidden_states.dtype)
            kept = ids >= 0
            scores[torch.nonzero(kept)[:, 0], ids[kept]] = weights[kept]
            answer = (output, scores.to(hidden_states.device))
        else:
            answer = self.client.forward(self.layer, hidden_states)
        elapsed = time.perf_counter() - started
        self.timing.calls += 1
        self.timing.seconds += elapsed
        self.timing.per_layer[self.layer] = self.timing.per_layer.get(self.layer, 0.0) + elapsed
        return answer


def mesh_layer_name(module_path: str) -> Optional[str]:
    """The mesh's name for the MoE layer at `module_path`: `model.layers.3.mlp` → `3`,
    `encoder.block.1.layer.1.mlp` → `encoder.1`."""
    if match := re.search(r"(?:^|\.)(encoder|decoder)\.block\.(\d+)\.", module_path):
        return f"{match.group(1)}.{match.group(2)}"
    if match := re.search(r"(?:^|\.)layers\.(\d+)\.", module_path):
        return match.group(1)
    return None


def attach(model: torch.nn.Module, client: Client) -> MeshTime:
    """Replaces every sparse MoE block of `model` with a `MeshMoE` calling `client`'s router. Returns the `MeshTime`
    the blocks add to. Refuses a model whose MoE layers the router does not serve (naming both), and, once attached,
    a call asking for router logits (`output_router_logits=True`): the mesh routes, the client has no gate to
    record them from."""
    described = client.describe()
    served = {layer.name: layer for layer in described.layers}
    blocks = [(path, module) for path, module in model.named_modules() if type(module).__name__ in BLOCKS]
    if not blocks:
        raise ValueError(
            f"attach: no sparse MoE block in this {type(model).__name__}; known blocks: {', '.join(sorted(BLOCKS))}")
    timing = MeshTime()
    for path, module in blocks:
        name = mesh_layer_name(path)
        if name is None or name not in served:
            raise ValueError(
                f"attach: {path} is MoE layer {name!r}, which the router at {client.target} does not serve "
                f"(it serves {described.model_type} layers {', '.join(served) or 'none'})")
        replacement = MeshMoE(
            client, name, BLOCKS[type(module).__name__], served[name].num_experts, type(module).__name__, timing)
        parent_path, _, attribute = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, attribute, replacement)
    _refuse_router_logits(model)
    return timing


def _refuse_router_logits(model: torch.nn.Module) -> None:
    config = getattr(model, "config", None)
    if getattr(config, "output_router_logits", False):
        config.output_router_logits = False  # the model's default must not ask for what the mesh does not send
    forward = model.forward

    def guarded(*args, **kwargs):
        if kwargs.get("output_router_logits"):
            raise ValueError(
                "output_router_logits=True: the experts of this model run on a mesh, which routes the tokens itself; "
                "router logits are not returned to the client (ask the router with return_routing for the routing)")
        return forward(*args, **kwargs)

    model.forward = guarded
