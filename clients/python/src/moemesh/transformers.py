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
from typing import Any, Optional, Union

import torch

from moemesh.client import Client, Layer, ModelDescription

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
    per_layer: dict[str, float] = field(default_factory=dict)

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

    def forward(self, hidden_states: torch.Tensor) -> Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        started = time.perf_counter()
        answer: Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]
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


# The probe vector of docs/protocol.md's "Which model": p_j = ((j mod 17) − 8) / 8, exact in every float format.
def probe_vector(width: int) -> torch.Tensor:
    return ((torch.arange(width, dtype=torch.float64) % 17) - 8) / 8


GATE_PROBE_TOLERANCE = 0.02  # of the largest probe value: bf16 storage moves a probe by well under 1% of it


def gate_probe(gate: torch.Tensor) -> list[float]:
    """A gate `W: [E, H]` applied to the probe vector, `W · p` (`[E]`, accumulated in double precision): what the
    router answers per layer in `DescribeModel`."""
    return (gate.detach().to("cpu", torch.float64) @ probe_vector(gate.shape[1])).tolist()


def gate_probes_differ(ours: list[float], theirs: tuple[float, ...]) -> Optional[float]:
    """The largest distance between two probes when over the tolerance, else None."""
    scale = max(max((abs(x) for x in ours), default=0.0), max((abs(x) for x in theirs), default=0.0), 1e-3)
    largest = max((abs(x - y) for x, y in zip(ours, theirs)), default=0.0)
    return largest if largest > GATE_PROBE_TOLERANCE * scale else None


class ModelMismatch(ValueError):
    """The local model is not the one the mesh serves: `differences` says how (type, hidden size, experts, weights)."""

    def __init__(self, target: str, differences: list[str]):
        self.differences = differences
        super().__init__(
            f"attach: the mesh at {target} serves another model: {'; '.join(differences)} "
            "(attach(..., verify=False) skips this check)")


def _block_gate(block: torch.nn.Module, num_experts: int, hidden_size: int) -> Optional[torch.Tensor]:
    """The block's gate weight `[E, H]`: its one such parameter outside its experts."""
    for name, parameter in block.named_parameters():
        if "expert" in name.split(".")[0] or parameter.dim() != 2:
            continue
        if tuple(parameter.shape) == (num_experts, hidden_size):
            return parameter
    return None


def _hidden_size(model: torch.nn.Module) -> Optional[int]:
    config = getattr(model, "config", None)
    return getattr(config, "hidden_size", None) or getattr(config, "d_model", None)


def model_differences(
    model: torch.nn.Module, blocks: list[tuple[str, str, torch.nn.Module]], described: ModelDescription,
    layers: dict[str, Layer],
) -> list[str]:
    """How `model` (its sparse blocks `[(path, mesh layer name, block)]`) differs from what the mesh
    serves: model type, hidden size, each layer's experts, top-k, shared expert and gate weights."""
    differences = []
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is not None and model_type != described.model_type:
        differences.append(f"model type: the mesh serves {described.model_type}, this model is {model_type}")
    hidden = _hidden_size(model)
    if hidden is not None and hidden != described.hidden_size:
        differences.append(f"hidden size: the mesh's is {described.hidden_size}, this model's {hidden}")
    if differences:
        return differences  # layers of another type or width differ everywhere: say the cause, not every layer
    local_experts = next(
        (getattr(config, key) for key in ("num_local_experts", "num_experts", "n_routed_experts")
         if isinstance(getattr(config, key, None), int)), None)
    local_top_k = getattr(config, "num_experts_per_tok", None)
    for path, name, block in blocks:
        served = layers[name]
        if local_experts is not None and local_experts != served.num_experts:
            differences.append(
                f"experts: the mesh's layer {served.name} has {served.num_experts}, this model's {local_experts}")
            continue
        if isinstance(local_top_k, int) and served.top_k and local_top_k != served.top_k:
            differences.append(f"layer {served.name}: the mesh routes top-{served.top_k}, this model top-{local_top_k}")
        local_shared = any(child.startswith("shared_expert") for child, _ in block.named_children())
        if local_shared != served.shared_expert:
            differences.append(
                f"layer {served.name}: the mesh's has {'a' if served.shared_expert else 'no'} shared expert, "
                f"this model's {'has one' if local_shared else 'none'}")
        gate = _block_gate(block, served.num_experts, described.hidden_size)
        if gate is None:
            shapes = [tuple(p.shape) for n, p in block.named_parameters() if "expert" not in n.split(".")[0]]
            differences.append(
                f"layer {served.name}: the mesh's gate is [{served.num_experts}, {described.hidden_size}], "
                f"this model's {path} has none of that shape (its gate parameters: {shapes})")
        elif served.gate_probe and (distance := gate_probes_differ(gate_probe(gate), served.gate_probe)) is not None:
            differences.append(
                f"layer {served.name}: the gate weights differ (probe values apart by up to {distance:.3g}): "
                "the mesh serves other weights")
    return differences


def attach(model: torch.nn.Module, client: Client, *, verify: bool = True) -> MeshTime:
    """Replaces every sparse MoE block of `model` with a `MeshMoE` calling `client`'s router. Returns the `MeshTime`
    the blocks add to. Refuses a model whose MoE layers the router does not serve (naming both); with `verify`, also
    one that is not the model served (`ModelMismatch`, naming what differs: type, hidden size, experts, gate
    weights); and, once attached, a call asking for router logits (`output_router_logits=True`): the mesh routes,
    the client has no gate to record them from."""
    described = client.describe()
    served = {layer.name: layer for layer in described.layers}
    found = [(path, module) for path, module in model.named_modules() if type(module).__name__ in BLOCKS]
    if not found:
        raise ValueError(
            f"attach: no sparse MoE block in this {type(model).__name__}; known blocks: {', '.join(sorted(BLOCKS))}")
    blocks = []  # (path, mesh layer name, block)
    for path, module in found:
        name = mesh_layer_name(path)
        if name is None or name not in served:
            raise ValueError(
                f"attach: {path} is MoE layer {name!r}, which the router at {client.target} does not serve "
                f"(it serves {described.model_type} layers {', '.join(served) or 'none'})")
        blocks.append((path, name, module))
    if verify and (differences := model_differences(model, blocks, described, served)):
        raise ModelMismatch(client.target, differences)
    timing = MeshTime()
    for path, name, module in blocks:
        replacement = MeshMoE(
            client, name, BLOCKS[type(module).__name__], served[name].num_experts, type(module).__name__, timing)
        parent_path, _, attribute = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, attribute, replacement)
    _refuse_router_logits(model)
    return timing


def _refuse_router_logits(model: torch.nn.Module) -> None:
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "output_router_logits", False):
        config.output_router_logits = False  # the model's default must not ask for what the mesh does not send
    forward = model.forward

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("output_router_logits"):
            raise ValueError(
                "output_router_logits=True: the experts of this model run on a mesh, which routes the tokens itself; "
                "router logits are not returned to the client (ask the router with return_routing for the routing)")
        return forward(*args, **kwargs)

    model.forward = guarded
