# SPDX-License-Identifier: Apache-2.0
"""Helpers for the import / export tests: tiny transformers models, perturbation, a tiny GGUF writer.

Imported by the test modules as `from export_testlib import ...` (pytest puts this folder on sys.path).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    NemotronHConfig,
    NemotronHForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

# Parameters whose HF init is a constant (ones, arange, zeros): moved away from it so every term matters.
PERTURBED = (
    "A_log",
    ".D",
    "dt_bias",
    "norm.weight",
    "norm_f.weight",
    "layernorm.weight",
    "conv1d.bias",
    ".bias",
)


def perturb_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Move the weights away from HF's init so that every term of the forward shows in the logits.

    Constant-initialised tensors (A_log, D, dt_bias, norms, biases) get N(0, 0.3) noise; matrices are redrawn
    with std 1/sqrt(fan_in) (HF's std 0.02 gives logits of ~0.5, where a wrong A_log or k_proj moves them by
    less than the 1e-4 tolerance).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * p.shape[1] ** -0.5)
            elif name.endswith(PERTURBED):
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return model


def tiny_nemotron_h(**overrides) -> NemotronHForCausalLM:
    """A random transformers NemotronH with all three block types (fp32, eval, perturbed)."""
    kw = dict(
        vocab_size=96, hidden_size=32, hybrid_override_pattern="M*-M-*M", num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, intermediate_size=48, mamba_num_heads=4, mamba_head_dim=8,
        n_groups=2, ssm_state_size=8, conv_kernel=4, chunk_size=8, time_step_min=0.01,
    )  # fmt: skip
    kw.update(overrides)
    return perturb_(NemotronHForCausalLM(NemotronHConfig(**kw))).eval()


def tiny_llama(**overrides) -> LlamaForCausalLM:
    """A random transformers Llama (GQA, RoPE theta 500, tied) (fp32, eval, perturbed)."""
    kw = dict(
        vocab_size=96, hidden_size=48, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
        intermediate_size=64, tie_word_embeddings=True, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    )  # fmt: skip
    kw.update(overrides)
    return perturb_(LlamaForCausalLM(LlamaConfig(**kw))).eval()


# Shared by the Qwen2 / Qwen3 / Mistral helpers: GQA, 3 decoder layers, head_dim 8 != hidden / heads (48 / 4).
_DECODER = {
    "vocab_size": 96, "hidden_size": 48, "num_hidden_layers": 3, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 64, "rms_norm_eps": 1e-5,
    "rope_parameters": {"rope_type": "default", "rope_theta": 500.0},
}  # fmt: skip


def tiny_qwen2(**overrides) -> Qwen2ForCausalLM:
    """A random transformers Qwen2 (q/k/v biases, no o_proj bias; untied) (fp32, eval, perturbed)."""
    return perturb_(Qwen2ForCausalLM(Qwen2Config(**{**_DECODER, **overrides}))).eval()


def tiny_qwen3(**overrides) -> Qwen3ForCausalLM:
    """A random transformers Qwen3 (per-head q/k RMSNorm; untied) (fp32, eval, perturbed)."""
    return perturb_(Qwen3ForCausalLM(Qwen3Config(**{**_DECODER, **overrides}))).eval()


def tiny_mistral(**overrides) -> MistralForCausalLM:
    """A random transformers Mistral (sliding window 6 unless overridden; untied) (fp32, eval, perturbed)."""
    config = MistralConfig(**{**_DECODER, "sliding_window": 6, **overrides})
    return perturb_(MistralForCausalLM(config)).eval()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> str:
    """'max abs diff X, mean Y' for assertion messages."""
    d = (a.double() - b.double()).abs()
    return f"max abs diff {d.max().item():.3e}, mean {d.mean().item():.3e}"


def assert_close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-4, what: str = "logits") -> None:
    assert a.shape == b.shape, f"{what}: shapes {tuple(a.shape)} vs {tuple(b.shape)}"
    diff = (a.double() - b.double()).abs().max().item()
    assert diff <= atol, f"{what}: {max_diff(a, b)} > atol {atol}"


def _permute_for_gguf(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf Q/K row order (interleaved rotary halves); transformers undoes it."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_GGUF_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def write_tiny_gguf(model: LlamaForCausalLM, path: Path) -> Path:
    """Write `model` as an F32 llama GGUF file (metadata + tensors, no tokenizer), like llama.cpp would."""
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_vocab_size(cfg.vocab_size)
    for key, tensor in model.state_dict().items():
        w = tensor.detach().numpy().astype(np.float32)
        if key == "model.embed_tokens.weight":
            writer.add_tensor("token_embd.weight", w)
        elif key == "model.norm.weight":
            writer.add_tensor("output_norm.weight", w)
        elif key == "lm_head.weight":
            if not cfg.tie_word_embeddings:
                writer.add_tensor("output.weight", w)
        else:
            _, _, layer, rest = key.split(".", 3)
            if rest == "self_attn.q_proj.weight":
                w = _permute_for_gguf(w, cfg.num_attention_heads)
            elif rest == "self_attn.k_proj.weight":
                w = _permute_for_gguf(w, cfg.num_key_value_heads)
            writer.add_tensor(f"blk.{layer}.{_GGUF_LAYER_NAMES[rest]}", w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
