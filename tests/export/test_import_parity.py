# SPDX-License-Identifier: Apache-2.0
"""HF checkpoint -> load_model -> native logits equal transformers' logits (fp32, CPU).

Random tiny NemotronH (all three block types; several Mamba group counts, head dims, chunk sizes and
sequence lengths that are not a multiple of the chunk) and Llama (GQA, RoPE theta, tied and untied) models,
saved with transformers' own `save_pretrained`. Constant-initialised tensors are perturbed first.
"""

import pytest
import torch
from export_testlib import assert_close, tiny_llama, tiny_nemotron_h

from nemotron_elastic.checkpoint import load_model

NEMOTRON_CASES = {
    # groups 2, head dim 8, chunk 8, T=21: three chunks, the last one partial
    "g2-p8-c8": dict(overrides={}, seq=21),
    # one group, head dim 4, 6 heads, chunk 16 = T; MHA attention, in/out_proj + MLP biases, no conv bias
    "g1-p4-c16": dict(
        overrides=dict(
            hybrid_override_pattern="-M*M",
            n_groups=1,
            mamba_num_heads=6,
            mamba_head_dim=4,
            chunk_size=16,
            num_key_value_heads=4,
            use_bias=True,
            mlp_bias=True,
            use_conv_bias=False,
            conv_kernel=3,
        ),
        seq=16,
    ),  # fmt: skip
    # three groups of 2 heads, head dim 6, chunk 5, T=23, silu MLP, larger state
    "g3-p6-c5": dict(
        overrides=dict(
            hybrid_override_pattern="MM-*-M",
            n_groups=3,
            mamba_num_heads=6,
            mamba_head_dim=6,
            chunk_size=5,
            ssm_state_size=12,
            mlp_hidden_act="silu",
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
        ),
        seq=23,
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", list(NEMOTRON_CASES), ids=list(NEMOTRON_CASES))
def test_nemotron_h_logits_match_transformers(case, tmp_path):
    spec = NEMOTRON_CASES[case]
    hf = tiny_nemotron_h(**spec["overrides"])
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    assert model.config.pattern == hf.config.hybrid_override_pattern
    x = torch.randint(0, hf.config.vocab_size, (2, spec["seq"]))
    with torch.no_grad():
        assert_close(model(x), hf(x).logits, atol=1e-4, what=f"NemotronH {case}")


def test_nemotron_h_tied_config_with_distinct_head_imports_untied(tmp_path):
    """transformers' NemotronH never ties: a tied config storing its own lm_head computes with that head."""
    hf = tiny_nemotron_h(tie_word_embeddings=True)
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    assert not model.config.tie_word_embeddings
    x = torch.randint(0, 96, (1, 11))
    with torch.no_grad():
        assert_close(model(x), hf(x).logits, what="NemotronH tied config, distinct head")


def test_nemotron_h_tied_config_with_equal_head_imports_tied(tmp_path):
    hf = tiny_nemotron_h(tie_word_embeddings=True)
    with torch.no_grad():
        hf.lm_head.weight.copy_(hf.model.embeddings.weight)
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.embeddings.weight
    x = torch.randint(0, 96, (1, 11))
    with torch.no_grad():
        assert_close(model(x), hf(x).logits, what="NemotronH tied")


LLAMA_CASES = {
    "gqa-tied-theta500": dict(overrides={}, seq=13),
    "mha-untied-bias-headdim16": dict(
        overrides=dict(
            hidden_size=32,
            num_attention_heads=4,
            num_key_value_heads=4,
            head_dim=16,
            tie_word_embeddings=False,
            attention_bias=True,
            mlp_bias=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        seq=19,
    ),  # fmt: skip
    "gqa-untied-theta1e6": dict(
        overrides=dict(
            tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 1e6}
        ),
        seq=40,
    ),
}


@pytest.mark.parametrize("case", list(LLAMA_CASES), ids=list(LLAMA_CASES))
def test_llama_logits_match_transformers(case, tmp_path):
    spec = LLAMA_CASES[case]
    hf = tiny_llama(**spec["overrides"])
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    cfg = model.config
    assert cfg.family == "llama" and cfg.pattern == "*-" * hf.config.num_hidden_layers
    assert cfg.rope_theta == hf.config.rope_parameters["rope_theta"]
    assert cfg.tie_word_embeddings == hf.config.tie_word_embeddings
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight is model.embeddings.weight
    x = torch.randint(0, hf.config.vocab_size, (2, spec["seq"]))
    with torch.no_grad():
        assert_close(model(x), hf(x).logits, atol=1e-4, what=f"Llama {case}")


def test_load_model_dtype_and_device_arguments(tmp_path):
    hf = tiny_llama()
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path, dtype="bfloat16", device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not model.training
    model64 = load_model(tmp_path, dtype=torch.float64)
    x = torch.randint(0, 96, (1, 7))
    with torch.no_grad():
        assert_close(model64(x), hf(x).logits, what="float64 load")
