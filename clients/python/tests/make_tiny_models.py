#!/usr/bin/env python3
"""Writes tiny random checkpoints of the seven MoE architectures MoEMesh serves, made by transformers itself from a
config and saved with `save_pretrained` (so their layout is exactly what users download):

    python clients/python/tests/make_tiny_models.py OUT_DIR [--dtype float32|bfloat16] [--layers N] [--only ARCH]

Each goes to OUT_DIR/<arch>. Vocabulary 64, hidden size 32, 4–8 experts, top-2 (Switch: top-1); seeded.
"""
import argparse
import os

import torch
import transformers


def configs(layers: int) -> dict:
    common = dict(vocab_size=64, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                  max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return {
        "mixtral": transformers.MixtralConfig(
            **common, intermediate_size=48, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2),
        "qwen2_moe": transformers.Qwen2MoeConfig(
            **common, intermediate_size=48, moe_intermediate_size=24, shared_expert_intermediate_size=40,
            num_key_value_heads=2, num_experts=4, num_experts_per_tok=2),
        "qwen3_moe": transformers.Qwen3MoeConfig(
            **common, intermediate_size=48, moe_intermediate_size=24, num_key_value_heads=2, num_experts=4,
            num_experts_per_tok=2, head_dim=8),
        "olmoe": transformers.OlmoeConfig(
            **common, intermediate_size=24, num_key_value_heads=4, num_experts=4, num_experts_per_tok=2),
        # The first layer dense, as DeepSeek-V3's first three are: it stays in the client.
        "deepseek_v3": transformers.DeepseekV3Config(
            **{**common, "num_hidden_layers": layers + 1}, intermediate_size=48, moe_intermediate_size=24,
            first_k_dense_replace=1, num_key_value_heads=4, n_routed_experts=8, n_shared_experts=1,
            num_experts_per_tok=2, n_group=2, topk_group=1, kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8,
            qk_nope_head_dim=8, v_head_dim=8, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        "gpt_oss": transformers.GptOssConfig(
            **common, intermediate_size=32, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
            head_dim=8, sliding_window=16, rope_parameters={"rope_type": "default", "rope_theta": 150000.0}),
        "switch": transformers.SwitchTransformersConfig(
            vocab_size=64, d_model=32, d_ff=48, d_kv=8, num_layers=layers, num_decoder_layers=layers, num_heads=4,
            num_experts=4, encoder_sparse_step=2, decoder_sparse_step=2, pad_token_id=0, eos_token_id=1,
            decoder_start_token_id=0),
    }


def model_class(arch: str):
    return transformers.SwitchTransformersForConditionalGeneration if arch == "switch" else transformers.AutoModelForCausalLM


def write(out: str, arch: str, config, dtype: torch.dtype, seed: int = 0) -> str:
    torch.manual_seed(seed)
    cls = model_class(arch)
    model = (cls(config) if arch == "switch" else cls.from_config(config)).to(dtype)
    folder = os.path.join(out, arch)
    model.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--only", action="append", help="an architecture (repeatable); default: all seven")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    for arch, config in configs(args.layers).items():
        if args.only and arch not in args.only:
            continue
        print(write(args.out, arch, config, dtype))


if __name__ == "__main__":
    main()
