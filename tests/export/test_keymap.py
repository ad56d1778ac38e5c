# SPDX-License-Identifier: Apache-2.0
"""Key maps and config conversion: round trips, and agreement with the native and transformers models."""

import pytest
import torch
from export_testlib import tiny_llama, tiny_nemotron_h

from nemotron_elastic.checkpoint.hf_config import hf_config_to_native, native_to_hf_config
from nemotron_elastic.checkpoint.keymap import from_hf_key, native_shapes, to_hf_key
from nemotron_elastic.config.model import ModelConfig
from nemotron_elastic.model import HybridLM

HYBRID = dict(
    pattern="M-*M-*", vocab_size=97, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
    head_dim=8, intermediate_size=48, mamba_num_heads=6, mamba_head_dim=4, mamba_n_groups=3,
    ssm_state_size=5, chunk_size=4,
)  # fmt: skip
LLAMA = dict(
    family="llama", pattern="*-*-", vocab_size=97, hidden_size=48, num_attention_heads=6,
    num_key_value_heads=2, head_dim=8, rope_theta=1000.0, intermediate_size=40, mlp_gated=True,
    mlp_activation="silu", tie_word_embeddings=True,
)  # fmt: skip
CONFIGS = {
    "hybrid": HYBRID,
    "hybrid-biases": dict(HYBRID, mamba_proj_bias=True, mlp_bias=True, use_conv_bias=False),
    "hybrid-per-layer": dict(
        HYBRID, intermediate_size=[48, 16], num_attention_heads=[4, 2], mamba_num_heads=[6, 3]
    ),
    "llama": LLAMA,
    "llama-untied-bias": dict(LLAMA, tie_word_embeddings=False, attention_bias=True, mlp_bias=True),
}


@pytest.mark.parametrize("name", list(CONFIGS), ids=list(CONFIGS))
def test_native_shapes_match_the_model(name):
    config = ModelConfig(**CONFIGS[name])
    with torch.device("meta"):
        model = HybridLM(config)
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        del state["lm_head.weight"]
    assert native_shapes(config) == state


@pytest.mark.parametrize("name", list(CONFIGS), ids=list(CONFIGS))
def test_key_maps_round_trip(name):
    config = ModelConfig(**CONFIGS[name])
    keys = list(native_shapes(config))
    keys += [] if "lm_head.weight" in keys else ["lm_head.weight"]
    hf_keys = [to_hf_key(k, config.family) for k in keys]
    assert len(set(hf_keys)) == len(keys)
    assert [from_hf_key(k, config.family) for k in hf_keys] == keys


@pytest.mark.parametrize("make", [tiny_nemotron_h, tiny_llama], ids=["nemotron_h", "llama"])
def test_hf_keys_are_exactly_the_transformers_keys(make):
    hf = make(tie_word_embeddings=False)
    config = hf_config_to_native(hf.config)
    # in memory transformers uses the `model.` prefix; files use `backbone.` (checked in test_roundtrip)
    expected = {
        k.replace("model.", "backbone.", 1) if config.family == "nemotron_h" else k for k in hf.state_dict()
    }
    assert {to_hf_key(k, config.family) for k in native_shapes(config)} == expected
    assert all(from_hf_key(k, config.family) is not None for k in hf.state_dict())


def test_llama_layer_split():
    assert from_hf_key("model.layers.3.input_layernorm.weight", "llama") == "layers.6.norm.weight"
    assert from_hf_key("model.layers.3.post_attention_layernorm.weight", "llama") == "layers.7.norm.weight"
    assert from_hf_key("model.layers.3.self_attn.k_proj.bias", "llama") == "layers.6.mixer.k_proj.bias"
    assert from_hf_key("model.layers.3.mlp.gate_proj.weight", "llama") == "layers.7.mixer.gate_proj.weight"
    assert from_hf_key("model.layers.3.mlp.experts.0.weight", "llama") is None
    assert from_hf_key("backbone.layers.0.mixer.A_log", "nemotron_h") == "layers.0.mixer.A_log"
    assert from_hf_key("model.layers.0.mixer.A_log", "nemotron_h") == "layers.0.mixer.A_log"
    assert from_hf_key("something.else", "nemotron_h") is None


@pytest.mark.parametrize(
    "kw",
    [
        HYBRID,
        dict(HYBRID, mamba_proj_bias=True, mlp_bias=True, mlp_activation="silu", tie_word_embeddings=True),
        dict(HYBRID, pattern="M-M-"),  # no attention layer
        LLAMA,
        dict(LLAMA, tie_word_embeddings=False, attention_bias=True, eos_token_id=5, bos_token_id=4),
    ],
    ids=["hybrid", "hybrid-biases-silu", "no-attention", "llama", "llama-untied"],
)
def test_config_round_trip_through_hf(kw):
    config = ModelConfig(**kw)
    hf_config = native_to_hf_config(config)
    back = hf_config_to_native(hf_config)
    for field in ("family", "pattern", "vocab_size", "hidden_size", "tie_word_embeddings", "norm_eps",
                  "rope_theta", "intermediate_size", "mlp_activation", "mlp_gated", "mlp_bias",
                  "attention_bias", "bos_token_id", "eos_token_id", "pad_token_id"):  # fmt: skip
        assert getattr(back, field) == getattr(config, field), field
    if "*" in config.pattern:
        assert (back.num_attention_heads, back.num_key_value_heads, back.head_dim) == (
            config.num_attention_heads, config.num_key_value_heads, config.head_dim,
        )  # fmt: skip
    if "M" in config.pattern:
        for field in ("mamba_num_heads", "mamba_head_dim", "mamba_n_groups", "ssm_state_size", "conv_kernel",
                      "use_conv_bias", "mamba_proj_bias", "chunk_size", "time_step_min"):  # fmt: skip
            assert getattr(back, field) == getattr(config, field), field


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(HYBRID, intermediate_size=[48, 16]), "heterogeneous"),
        (dict(LLAMA, pattern="*-*"), r"Llama export needs pattern"),
        (dict(HYBRID, rope_theta=10000.0), "NemotronH export needs"),
        (dict(LLAMA, hidden_size=44), "divisible"),
    ],
    ids=["heterogeneous", "llama-pattern", "nemotron-rope", "llama-hidden"],
)
def test_unexportable_configs(kw, match):
    with pytest.raises(ValueError, match=match):
        native_to_hf_config(ModelConfig(**kw))
