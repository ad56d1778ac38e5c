# SPDX-License-Identifier: Apache-2.0
"""Scaled RoPE in our own remote-code format (`nemotron_elastic_hybrid`, remote_code/).

A Llama parent with each RoPE type the native model runs (default, linear, llama3, yarn with and without an
explicit attention factor, dynamic, longrope), cut to per-layer MLP widths that neither the stock Llama class nor
DeciLM can express (not multiples of 256), is exported with `--format auto`, which falls back to our format:

- transformers loads it through `auto_map` (`trust_remote_code=True`) and its logits equal the native sub-model's
  (fp32, 1e-4) on sequences of 40 tokens: past original_max_position_embeddings (8 / 16) and past
  max_position_embeddings (32), where dynamic RoPE rescales and longrope switches to its long factors;
- import -> export -> import is bit-identical (config, rope_parameters included, and every tensor);
- a config.json with a RoPE type the modeling code does not run is refused in one line naming the key.
"""

import json

import pytest
import torch
from export_testlib import tiny_llama
from test_rope_parity import MAX_POS, ROPES
from test_subnet_export import assert_close, native_sub
from transformers import AutoModelForCausalLM

from nemotron_elastic.checkpoint import load_model
from nemotron_elastic.checkpoint.hf import read_hf, save_hf
from nemotron_elastic.export import export_subnet

SPEC = {"mlp": [64, 40, 16]}  # per layer, and not multiples of 256: neither stock Llama nor DeciLM
# what import keeps: plain RoPE is rope_theta alone (rope_parameters None)
EXPECTED = {name: None if rope["rope_type"] == "default" else rope for name, rope in ROPES.items()}
IDS = torch.randint(0, 96, (2, 40), generator=torch.Generator().manual_seed(5))  # 40 > MAX_POS > originals


@pytest.fixture(scope="module", params=list(ROPES))
def exported(request, tmp_path_factory):
    """(rope name, HF parent folder, export folder, ExportResult) for one RoPE type."""
    root = tmp_path_factory.mktemp(f"rope-{request.param}")
    tiny_llama(rope_parameters=dict(ROPES[request.param]), max_position_embeddings=MAX_POS).save_pretrained(
        root / "parent"
    )
    result = export_subnet(root / "parent", root / "out", spec=SPEC)
    return request.param, root / "parent", root / "out", result


def test_auto_falls_back_to_own_format_and_transformers_matches_native(exported):
    name, parent_dir, out, result = exported
    assert result.kind == "hf-remote-code"
    raw = json.loads((out / "config.json").read_text())
    assert raw["model_type"] == "nemotron_elastic_hybrid" and raw["rope_parameters"] == EXPECTED[name]
    hf = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()  # through auto_map
    assert type(hf).__name__ == "ElasticHybridForCausalLM"
    sub = native_sub(load_model(parent_dir), SPEC)
    with torch.no_grad():
        assert_close(hf(IDS, use_cache=False).logits, sub(IDS), f"{name}: own-format export vs native sub-model")
        # a short sequence too: dynamic / longrope take their unscaled / short frequencies there
        assert_close(hf(IDS[:, :12], use_cache=False).logits, sub(IDS[:, :12]), f"{name}: 12 tokens")


def test_import_export_import_is_bit_identical(exported, tmp_path):
    name, parent_dir, out, _ = exported
    config1, tensors1 = read_hf(out)
    assert config1.rope_parameters == EXPECTED[name]
    assert config1 == native_sub(load_model(parent_dir), SPEC).config
    save_hf(load_model(out), tmp_path / "again", allow_remote_code=True)
    config2, tensors2 = read_hf(tmp_path / "again")
    assert config2 == config1 and tensors2.keys() == tensors1.keys()
    for key in tensors1:
        assert torch.equal(tensors2[key], tensors1[key]), key
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == json.loads((out / "config.json").read_text())


def test_unsupported_rope_type_in_config_json_is_one_line(tmp_path):
    from nemotron_elastic.checkpoint.remote_code.configuration_elastic_hybrid import ElasticHybridConfig

    with pytest.raises(ValueError, match=r"rope_parameters\.rope_type: unsupported 'proportional'") as err:
        ElasticHybridConfig(pattern="*-", rope_theta=500.0, rope_parameters={"rope_type": "proportional"})
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"rope_parameters\.rope_theta: 10\.0 differs from rope_theta 500\.0"):
        ElasticHybridConfig(pattern="*-", rope_theta=500.0, rope_parameters={"rope_type": "linear", "rope_theta": 10.0,
                                                                             "factor": 2.0})  # fmt: skip
