# SPDX-License-Identifier: Apache-2.0
"""Qwen2, Qwen3, Mistral and NemotronH with its own attention / Mamba head dims: import gives transformers'
logits (fp32, <= 1e-4), import -> export -> import is the identity, the export loads in the stock class with
the same logits, and a homogeneous sub-model exports to the stock class of its family.

Each feature is also shown to matter: the same weights without it move the logits far beyond the tolerance.
"""

import dataclasses
import json

import pytest
import torch
from export_testlib import assert_close, tiny_mistral, tiny_nemotron_h, tiny_qwen2, tiny_qwen3
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from nemotron_elastic.checkpoint import build_model, load_model, save_native
from nemotron_elastic.checkpoint.hf import read_hf, save_hf
from nemotron_elastic.checkpoint.load import read_checkpoint
from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.export import export_subnet
from nemotron_elastic.subnet.slicing import slice_model

CASES = {
    # q/k/v biases without an o_proj bias; head_dim 8 with hidden 48 / 4 heads
    "qwen2": lambda: tiny_qwen2(),
    "qwen2-tied-mha": lambda: tiny_qwen2(num_key_value_heads=4, tie_word_embeddings=True),
    # per-head q/k RMSNorm; also with q/k/v/o biases
    "qwen3": lambda: tiny_qwen3(),
    "qwen3-bias": lambda: tiny_qwen3(attention_bias=True),
    # sliding window 6 < 19 tokens; and the null window of Mistral v0.2+
    "mistral-window": lambda: tiny_mistral(),
    "mistral-no-window": lambda: tiny_mistral(sliding_window=None),
    # Nemotron-H style: attention head_dim 12 != hidden / heads (32 / 4 = 8), mamba_head_dim 6 != head_dim,
    # 4 Mamba groups of 2 heads (the 4B / 8B / 47B / Nano V2 configs set head_dim, mamba_head_dim, n_groups)
    "nemotron_h-head-dims": lambda: tiny_nemotron_h(
        head_dim=12, mamba_head_dim=6, mamba_num_heads=8, n_groups=4
    ),
    "nemotron_h-mha-one-group": lambda: tiny_nemotron_h(
        num_key_value_heads=4, head_dim=16, mamba_head_dim=4, n_groups=1, chunk_size=5
    ),
}
# case -> (config changes, native keys dropped): the model without the family's feature
WITHOUT_FEATURE = {
    "qwen2": ({"attention_bias": False}, ("q_proj.bias", "k_proj.bias", "v_proj.bias")),
    "qwen3": ({"attention_qk_norm": False}, ("q_norm.weight", "k_norm.weight")),
    "mistral-window": ({"sliding_window": None}, ()),
}
SEQ = 19


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(case, tmp_path):
    hf = CASES[case]()
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    assert model.config.family == hf.config.model_type
    x = torch.randint(0, hf.config.vocab_size, (2, SEQ))
    with torch.no_grad():
        assert_close(model(x), hf(x).logits, atol=1e-4, what=case)


@pytest.mark.parametrize("case", list(WITHOUT_FEATURE))
def test_the_family_feature_matters(case, tmp_path):
    """The same weights without the feature are another function: the parity above could fail."""
    hf = CASES[case]()
    hf.save_pretrained(tmp_path)
    config, state = read_checkpoint(tmp_path)
    changes, dropped = WITHOUT_FEATURE[case]
    other = build_model(dataclasses.replace(config, **changes), {k: v for k, v in state.items()
                                                                 if not k.endswith(dropped)})
    x = torch.randint(0, hf.config.vocab_size, (2, SEQ))
    with torch.no_grad():
        assert (other(x) - hf(x).logits).abs().max() > 1e-2


def test_nemotron_h_head_dims_are_read_not_derived(tmp_path):
    hf = tiny_nemotron_h(head_dim=12, mamba_head_dim=6, mamba_num_heads=8, n_groups=4)
    hf.save_pretrained(tmp_path)
    config, _ = read_hf(tmp_path)
    assert (config.head_dim, config.mamba_head_dim, config.mamba_n_groups) == (12, 6, 4)
    assert config.head_dim * config.num_attention_heads != config.hidden_size


@pytest.mark.parametrize("case", list(CASES))
def test_import_export_import_is_identity_and_loads_in_transformers(case, tmp_path):
    hf = CASES[case]()
    hf.save_pretrained(tmp_path / "hf")
    config0, tensors0 = read_hf(tmp_path / "hf")
    model = load_model(tmp_path / "hf")
    save_native(model, tmp_path / "native")
    save_hf(load_model(tmp_path / "native"), tmp_path / "export")
    config2, tensors2 = read_hf(tmp_path / "export")
    assert config2 == config0
    assert tensors2.keys() == tensors0.keys()
    assert all(torch.equal(tensors2[k], tensors0[k]) for k in tensors0)
    with safe_open(str(tmp_path / "export" / "model.safetensors"), framework="pt") as f:
        exported_keys = set(f.keys())
    with safe_open(str(tmp_path / "hf" / "model.safetensors"), framework="pt") as f:
        assert exported_keys == set(f.keys())
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    assert type(exported) is type(hf)
    x = torch.randint(0, hf.config.vocab_size, (1, SEQ))
    with torch.no_grad():
        assert_close(exported(x).logits, hf(x).logits, atol=0.0, what=f"{case}: export vs original")


@pytest.mark.parametrize(
    "case,spec",
    [
        ("qwen2", {"hidden": 40, "mlp": 48, "attention_heads": 2, "layers": [0, 1, 4, 5]}),
        ("qwen3", {"hidden": 36, "mlp": 40, "attention_heads": 2}),
        ("mistral-window", {"hidden": 40, "attention_heads": 2, "layers": [0, 1, 2, 3]}),
    ],
)
def test_homogeneous_sub_model_exports_stock_class(case, spec, tmp_path):
    """Hidden 40 with 2 heads of 8: the export must write head_dim, which hidden / heads would not give."""
    hf = CASES[case]()
    hf.save_pretrained(tmp_path / "hf")
    result = export_subnet(tmp_path / "hf", tmp_path / "out", spec=spec)
    assert result.kind == "hf"
    assert "auto_map" not in json.loads((tmp_path / "out" / "config.json").read_text())
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert type(exported) is type(hf)
    parent = load_model(tmp_path / "hf")
    sub = slice_model(parent, SubnetSpec.from_dict(spec, parent.config)).eval()
    x = torch.randint(0, hf.config.vocab_size, (2, SEQ))
    with torch.no_grad():
        assert_close(exported(x).logits, sub(x), atol=1e-4, what=f"{case} sub-model: stock export vs native")
