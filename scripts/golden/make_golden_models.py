#!/usr/bin/env python3
"""Writes tiny checkpoints of the seven MoE architectures MoEMesh serves, in their Hugging Face layout and config,
with reference outputs computed here by an independent numpy (float64) implementation of each model's published
routing and expert formulas (shared/ROUTING.md; the models' transformers code).

    python3 scripts/golden/make_golden_models.py            # writes Tests/Fixtures/golden/

For each architecture and weight dtype (f32, bf16) it writes a model folder `<name>-<dtype>/` (config.json and
safetensors; Qwen2-MoE sharded with model.safetensors.index.json; dense layers and attention tensors included so
that loaders must pick the MoE tensors out) and `<name>-<dtype>.reference.safetensors` holding, for every MoE layer
L: `L.hidden_states` [T, H] (f32), `L.output` [T, H], `L.topk_ids` [T, k] (i32), `L.topk_weights` [T, k].
Switch Transformers also gets `L.capacity_hidden_states` [B, S, H] and `L.capacity_output`, the original
per-sequence expert_capacity rule (dropped tokens give max p · x).
Inputs are resampled until every routing decision clears ties by 1e-4, so that f32 and f64 choose alike.

Each f32 model is also written as `<name>-f32-tf5/`: the same tensors, with config.json spelled as transformers 5's
save_pretrained writes it (every key of a configuration class's attribute_map under the attribute's own name, `dtype`
for `torch_dtype`, `transformers_version`); its reference is the f32 one.
"""
import json
import os
import struct

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "golden")
MARGIN = 1e-4


# ---------------------------------------------------------------- safetensors and bf16
def bf16_bits(a):
    """float32 → bfloat16 bits, round to nearest even."""
    bits = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def write_safetensors(path, tensors):
    """tensors: name → (dtype string, numpy array of the stored element type)."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, array) in tensors.items():
        blob = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


class Checkpoint:
    """Weights as stored (f32 or bf16) and as the reference sees them (float64 of the stored values)."""

    def __init__(self, dtype, rng):
        self.dtype, self.rng, self.stored, self.values = dtype, rng, {}, {}

    def add(self, name, shape, scale):
        w = (self.rng.uniform(-1, 1, size=shape) * scale).astype(np.float32)
        if self.dtype == "bf16":
            bits = bf16_bits(w)
            self.stored[name] = ("BF16", bits)
            w = from_bf16_bits(bits)
        else:
            self.stored[name] = ("F32", w)
        self.values[name] = w.astype(np.float64)
        return self.values[name]

    def write(self, folder, shards=1):
        names = list(self.stored)
        if shards == 1:
            write_safetensors(os.path.join(folder, "model.safetensors"), self.stored)
            return
        weight_map = {}
        for index in range(shards):
            part = names[index::shards]
            file = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
            write_safetensors(os.path.join(folder, file), {n: self.stored[n] for n in part})
            weight_map.update({n: file for n in part})
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=2)


# ---------------------------------------------------------------- formulas (float64)
def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def silu(x):
    return x * sigmoid(x)


def top_k(scores, k):
    """Indices of the k largest scores, descending; ties to the lower index."""
    return np.lexsort((np.arange(len(scores)), -scores))[:k]


def margin_ok(scores, k):
    """Whether the k-th and (k+1)-th largest finite scores differ by at least MARGIN."""
    finite = np.sort(scores[np.isfinite(scores)])[::-1]
    return len(finite) <= k or finite[k - 1] - finite[k] >= MARGIN


def swiglu(x, gate, up, down):
    return down @ (silu(gate @ x) * (up @ x))


class Rejected(Exception):
    """A token's routing is too close to a tie."""


# Each architecture: build(ckpt, cfg) → list of (layer name, token function x → (y, ids, weights)).
def mixtral_like(ckpt, layers, H, I, E, k, gate_name, expert_names, renormalize, shared=None):
    fns = []
    for L in layers:
        Wr = ckpt.add(gate_name(L), (E, H), 1 / np.sqrt(H))
        experts = [tuple(ckpt.add(n, s, sc) for n, s, sc in expert_names(L, e, H, I)) for e in range(E)]
        sh = None
        if shared:
            sh = shared(L)

        def token(x, Wr=Wr, experts=experts, sh=sh):
            p = softmax(Wr @ x)
            if not margin_ok(p, k):
                raise Rejected
            S = top_k(p, k)
            w = p[S] / p[S].sum() if renormalize else p[S]
            y = sum(wj * swiglu(x, *experts[e]) for wj, e in zip(w, S))
            if sh is not None:
                y = y + sh(x)
            return y, S, w

        fns.append((str(L), token))
    return fns


def swiglu_names(prefix, names=("gate_proj", "up_proj", "down_proj")):
    def names_for(L, e, H, I):
        p = prefix(L, e)
        return [(p + names[0] + ".weight", (I, H), 1 / np.sqrt(H)), (p + names[1] + ".weight", (I, H), 1 / np.sqrt(H)),
                (p + names[2] + ".weight", (H, I), 1 / np.sqrt(I))]
    return names_for


def add_noise_tensors(ckpt, layers, H):
    """Non-MoE tensors a real checkpoint has: embeddings, attention, norms."""
    ckpt.add("model.embed_tokens.weight", (11, H), 1)
    for L in layers:
        ckpt.add(f"model.layers.{L}.self_attn.q_proj.weight", (H, H), 1 / np.sqrt(H))
        ckpt.add(f"model.layers.{L}.input_layernorm.weight", (H,), 1)


def build_mixtral(ckpt):
    H, I, E, k, layers = 16, 24, 8, 2, [0, 1]
    config = dict(architectures=["MixtralForCausalLM"], model_type="mixtral", hidden_size=H, intermediate_size=I,
                  num_hidden_layers=2, num_local_experts=E, num_experts_per_tok=k, hidden_act="silu",
                  num_attention_heads=4, vocab_size=11)
    add_noise_tensors(ckpt, layers, H)
    fns = mixtral_like(ckpt, layers, H, I, E, k, lambda L: f"model.layers.{L}.block_sparse_moe.gate.weight",
                       swiglu_names(lambda L, e: f"model.layers.{L}.block_sparse_moe.experts.{e}.", ("w1", "w3", "w2")),
                       renormalize=True)
    return config, fns, 1


def build_qwen2(ckpt):
    H, I, IS, E, k = 16, 12, 20, 8, 2
    config = dict(architectures=["Qwen2MoeForCausalLM"], model_type="qwen2_moe", hidden_size=H, intermediate_size=40,
                  moe_intermediate_size=I, shared_expert_intermediate_size=IS, num_hidden_layers=3, num_experts=E,
                  num_experts_per_tok=k, norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[1],
                  hidden_act="silu")
    add_noise_tensors(ckpt, [0, 1, 2], H)
    for n, s in (("gate_proj", (40, H)), ("up_proj", (40, H)), ("down_proj", (H, 40))):   # layer 1 is dense
        ckpt.add(f"model.layers.1.mlp.{n}.weight", s, 0.2)

    def shared(L):
        p = f"model.layers.{L}.mlp."
        g = ckpt.add(p + "shared_expert.gate_proj.weight", (IS, H), 1 / np.sqrt(H))
        u = ckpt.add(p + "shared_expert.up_proj.weight", (IS, H), 1 / np.sqrt(H))
        d = ckpt.add(p + "shared_expert.down_proj.weight", (H, IS), 1 / np.sqrt(IS))
        sg = ckpt.add(p + "shared_expert_gate.weight", (1, H), 1 / np.sqrt(H))
        return lambda x: sigmoid(sg @ x)[0] * swiglu(x, g, u, d)

    fns = mixtral_like(ckpt, [0, 2], H, I, E, k, lambda L: f"model.layers.{L}.mlp.gate.weight",
                       swiglu_names(lambda L, e: f"model.layers.{L}.mlp.experts.{e}."), renormalize=False, shared=shared)
    return config, fns, 2


def build_qwen3(ckpt):
    H, I, E, k = 16, 12, 8, 2
    config = dict(architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe", hidden_size=H, intermediate_size=40,
                  moe_intermediate_size=I, num_hidden_layers=2, num_experts=E, num_experts_per_tok=k,
                  norm_topk_prob=True, decoder_sparse_step=2, mlp_only_layers=[], hidden_act="silu")
    add_noise_tensors(ckpt, [0, 1], H)
    fns = mixtral_like(ckpt, [1], H, I, E, k, lambda L: f"model.layers.{L}.mlp.gate.weight",
                       swiglu_names(lambda L, e: f"model.layers.{L}.mlp.experts.{e}."), renormalize=True)
    return config, fns, 1


def build_olmoe(ckpt):
    H, I, E, k = 16, 12, 8, 2
    config = dict(architectures=["OlmoeForCausalLM"], model_type="olmoe", hidden_size=H, intermediate_size=I,
                  num_hidden_layers=1, num_experts=E, num_experts_per_tok=k, norm_topk_prob=False, hidden_act="silu")
    add_noise_tensors(ckpt, [0], H)
    fns = mixtral_like(ckpt, [0], H, I, E, k, lambda L: f"model.layers.{L}.mlp.gate.weight",
                       swiglu_names(lambda L, e: f"model.layers.{L}.mlp.experts.{e}."), renormalize=False)
    return config, fns, 1


def build_deepseek(ckpt, version):
    H, I, E, k, groups, kept = 16, 8, 8, 2, 4, 2
    v3 = version == 3
    shared_count, scaling = (2, 2.5) if v3 else (1, 2.0)
    config = dict(architectures=[f"DeepseekV{version}ForCausalLM"], model_type=f"deepseek_v{version}", hidden_size=H,
                  intermediate_size=32, moe_intermediate_size=I, num_hidden_layers=3 if not v3 else 2,
                  n_routed_experts=E, n_shared_experts=shared_count, num_experts_per_tok=k, n_group=groups,
                  topk_group=kept, routed_scaling_factor=scaling, first_k_dense_replace=1, moe_layer_freq=1,
                  norm_topk_prob=v3, scoring_func="sigmoid" if v3 else "softmax",
                  topk_method="noaux_tc" if v3 else "group_limited_greedy", hidden_act="silu")
    layers = [1] if v3 else [1, 2]
    add_noise_tensors(ckpt, [0] + layers, H)
    for n, s in (("gate_proj", (32, H)), ("up_proj", (32, H)), ("down_proj", (H, 32))):   # layer 0 is dense
        ckpt.add(f"model.layers.0.mlp.{n}.weight", s, 0.2)
    fns = []
    for L in layers:
        p = f"model.layers.{L}.mlp."
        Wr = ckpt.add(p + "gate.weight", (E, H), 2 / np.sqrt(H))
        bias = ckpt.add(p + "gate.e_score_correction_bias", (E,), 0.3) if v3 else None
        experts = [tuple(ckpt.add(n, s, sc) for n, s, sc in swiglu_names(lambda L, e: f"{p}experts.{e}.")(L, e, H, I))
                   for e in range(E)]
        IS = I * shared_count
        shared = (ckpt.add(p + "shared_experts.gate_proj.weight", (IS, H), 1 / np.sqrt(H)),
                  ckpt.add(p + "shared_experts.up_proj.weight", (IS, H), 1 / np.sqrt(H)),
                  ckpt.add(p + "shared_experts.down_proj.weight", (H, IS), 1 / np.sqrt(IS)))

        def token(x, Wr=Wr, bias=bias, experts=experts, shared=shared):
            logits = Wr @ x
            if v3:
                s = sigmoid(logits)
                choice = s + bias
                group_scores = np.array([np.sort(g)[-2:].sum() for g in choice.reshape(groups, -1)])
            else:
                s = softmax(logits)
                choice = s.copy()
                group_scores = choice.reshape(groups, -1).max(-1)
            if not margin_ok(group_scores, kept):
                raise Rejected
            keep = top_k(group_scores, kept)
            masked = np.full(E, -np.inf)
            for g in keep:
                masked[g * (E // groups):(g + 1) * (E // groups)] = choice[g * (E // groups):(g + 1) * (E // groups)]
            if not margin_ok(masked, k):
                raise Rejected
            S = top_k(masked, k)
            w = s[S]
            if v3:
                if k > 1:
                    w = w / (w.sum() + 1e-20)
                w = w * scaling
            else:
                w = w * scaling   # V2 with norm_topk_prob false: scaled, not renormalised
            y = sum(wj * swiglu(x, *experts[e]) for wj, e in zip(w, S)) + swiglu(x, *shared)
            return y, S, w

        fns.append((str(L), token))
    return config, fns, 1


def build_gpt_oss(ckpt):
    H, I, E, k, limit = 16, 12, 4, 2, 1.0
    config = dict(architectures=["GptOssForCausalLM"], model_type="gpt_oss", hidden_size=H, intermediate_size=I,
                  num_hidden_layers=1, num_local_experts=E, num_experts_per_tok=k, swiglu_limit=limit,
                  hidden_act="silu")
    add_noise_tensors(ckpt, [0], H)
    p = "model.layers.0.mlp."
    Wr = ckpt.add(p + "router.weight", (E, H), 1 / np.sqrt(H))
    br = ckpt.add(p + "router.bias", (E,), 0.5)
    GU = ckpt.add(p + "experts.gate_up_proj", (E, H, 2 * I), 2 / np.sqrt(H))
    GUb = ckpt.add(p + "experts.gate_up_proj_bias", (E, 2 * I), 0.5)
    D = ckpt.add(p + "experts.down_proj", (E, I, H), 1 / np.sqrt(I))
    Db = ckpt.add(p + "experts.down_proj_bias", (E, H), 0.5)

    def expert(e, x):
        gu = x @ GU[e] + GUb[e]
        gate, up = gu[0::2], gu[1::2]
        gate = np.minimum(gate, limit)
        up = np.clip(up, -limit, limit)
        return ((up + 1) * (gate * sigmoid(1.702 * gate))) @ D[e] + Db[e]

    def token(x):
        logits = Wr @ x + br
        if not margin_ok(logits, k):
            raise Rejected
        S = top_k(logits, k)
        w = softmax(logits[S])
        return sum(wj * expert(e, x) for wj, e in zip(w, S)), S, w

    return config, [("0", token)], 1


def build_switch(ckpt):
    H, I, E, capacity = 16, 24, 4, 2
    config = dict(architectures=["SwitchTransformersForConditionalGeneration"], model_type="switch_transformers",
                  d_model=H, d_ff=I, num_experts=E, num_layers=4, num_decoder_layers=4, encoder_sparse_step=2,
                  decoder_sparse_step=2, expert_capacity=capacity, router_bias=False, dense_act_fn="relu",
                  vocab_size=11)
    ckpt.add("shared.weight", (11, H), 1)
    fns = []
    for stack, ff in (("encoder", 1), ("decoder", 2)):
        for block in range(4):
            p = f"{stack}.block.{block}.layer.{ff}."
            if block % 2 != 1:   # dense block
                ckpt.add(p + "mlp.wi.weight", (I, H), 0.2)
                ckpt.add(p + "mlp.wo.weight", (H, I), 0.2)
                continue
            Wr = ckpt.add(p + "mlp.router.classifier.weight", (E, H), 1 / np.sqrt(H))
            experts = [(ckpt.add(p + f"mlp.experts.expert_{e}.wi.weight", (I, H), 1 / np.sqrt(H)),
                        ckpt.add(p + f"mlp.experts.expert_{e}.wo.weight", (H, I), 1 / np.sqrt(I))) for e in range(E)]

            def token(x, Wr=Wr, experts=experts):
                p_ = softmax(Wr @ x)
                if not margin_ok(p_, 1):
                    raise Rejected
                e = int(top_k(p_, 1)[0])
                wi, wo = experts[e]
                return p_[e] * (wo @ np.maximum(wi @ x, 0)), np.array([e]), np.array([p_[e]])

            fns.append((f"{stack}.{block}", token))
    return config, fns, 1


def switch_capacity_output(token, hidden, capacity):
    """Per sequence, in token order: a token is kept while its expert's running count ≤ capacity; otherwise its
    output is max p · x."""
    out = np.zeros_like(hidden)
    for b in range(hidden.shape[0]):
        counts = {}
        for s in range(hidden.shape[1]):
            y, S, w = token(hidden[b, s])
            e = int(S[0])
            counts[e] = counts.get(e, 0) + 1
            out[b, s] = y if counts[e] <= capacity else w[0] * hidden[b, s]
    return out


# attribute_map of transformers 5.24's configuration classes (alias → the attribute it names), for the keys MoEMesh
# reads. transformers 5 writes the attribute's name; the Hub's original config.json files sometimes use the alias.
ATTRIBUTE_MAPS = {
    "mixtral": {"num_experts": "num_local_experts"},
    "qwen3_moe": {"num_experts": "num_local_experts"},
    "olmoe": {"num_local_experts": "num_experts"},
    "deepseek_v2": {"num_experts": "n_routed_experts"},
    "deepseek_v3": {"num_local_experts": "n_routed_experts"},
    "gpt_oss": {"num_experts": "num_local_experts"},
    "switch_transformers": {"hidden_size": "d_model", "num_hidden_layers": "num_layers"},
}


def transformers5_spelling(config):
    """config.json as transformers 5's save_pretrained writes it."""
    mapping = ATTRIBUTE_MAPS.get(config["model_type"], {})
    spelled = {mapping.get(key, key): value for key, value in config.items() if key != "torch_dtype"}
    spelled["dtype"] = config["torch_dtype"]
    spelled["transformers_version"] = "5.24.0"
    return spelled


def write_model(folder, ckpt, shards, config):
    os.makedirs(folder, exist_ok=True)
    for old in os.listdir(folder):
        os.remove(os.path.join(folder, old))
    ckpt.write(folder, shards)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)


ARCHITECTURES = {
    "mixtral": build_mixtral, "qwen2_moe": build_qwen2, "qwen3_moe": build_qwen3, "olmoe": build_olmoe,
    "deepseek_v2": lambda c: build_deepseek(c, 2), "deepseek_v3": lambda c: build_deepseek(c, 3),
    "gpt_oss": build_gpt_oss, "switch_transformers": build_switch,
}


def sample_tokens(rng, token, count, H):
    """count inputs (f32 values) whose routing clears ties."""
    xs, results = [], []
    while len(xs) < count:
        x = rng.standard_normal(H).astype(np.float32)
        try:
            results.append(token(x.astype(np.float64)))
            xs.append(x)
        except Rejected:
            continue
    return np.stack(xs), results


def main():
    os.makedirs(OUT, exist_ok=True)
    for seed, (name, build) in enumerate(ARCHITECTURES.items()):
        for dtype in ("f32", "bf16"):
            rng = np.random.default_rng(1000 + seed)
            ckpt = Checkpoint(dtype, rng)
            config, fns, shards = build(ckpt)
            config["torch_dtype"] = "float32" if dtype == "f32" else "bfloat16"
            write_model(os.path.join(OUT, f"{name}-{dtype}"), ckpt, shards, config)
            if dtype == "f32":
                write_model(os.path.join(OUT, f"{name}-{dtype}-tf5"), ckpt, shards, transformers5_spelling(config))
            H = config.get("hidden_size", config.get("d_model"))
            reference = {}
            for layer, token in fns:
                hidden, results = sample_tokens(rng, token, 7, H)
                reference[f"{layer}.hidden_states"] = ("F32", hidden)
                reference[f"{layer}.output"] = ("F32", np.stack([r[0] for r in results]).astype(np.float32))
                reference[f"{layer}.topk_ids"] = ("I32", np.stack([r[1] for r in results]).astype(np.int32))
                reference[f"{layer}.topk_weights"] = ("F32", np.stack([r[2] for r in results]).astype(np.float32))
                if name == "switch_transformers":
                    flat, _ = sample_tokens(rng, token, 10, H)
                    batch = flat.reshape(2, 5, H)
                    out = switch_capacity_output(token, batch.astype(np.float64), config["expert_capacity"])
                    reference[f"{layer}.capacity_hidden_states"] = ("F32", batch)
                    reference[f"{layer}.capacity_output"] = ("F32", out.astype(np.float32))
            write_safetensors(os.path.join(OUT, f"{name}-{dtype}.reference.safetensors"), reference)
            print(f"{name}-{dtype}: MoE layers {[l for l, _ in fns]}")


if __name__ == "__main__":
    main()
