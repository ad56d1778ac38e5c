# SPDX-License-Identifier: Apache-2.0
"""RoPE scaling: every supported rope type gives transformers' cos / sin at every position and its logits.

Types: default, linear, llama3, yarn (with the attention factor it derives, and with an explicit one), dynamic
(at a length beyond max_position_embeddings, where its frequencies change), longrope (short and long factors).
Positions run past original_max_position_embeddings. The rope parameters survive config.yaml and export
unchanged; the legacy `rope_scaling` key imports too; an unknown type is one line naming the key.
"""

import dataclasses
import json
import math

import pytest
import torch
from export_testlib import assert_close, tiny_llama, tiny_qwen3
from transformers import AutoModelForCausalLM, LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from nemotron_elastic.checkpoint import build_model, load_model, read_native, save_native
from nemotron_elastic.checkpoint.hf import read_hf, save_hf
from nemotron_elastic.checkpoint.hf_config import hf_config_to_native
from nemotron_elastic.checkpoint.load import read_checkpoint
from nemotron_elastic.model.rope import RotaryEmbedding

MAX_POS = 32  # max_position_embeddings of every case; sequences run to 48
ROPES = {
    "default": {"rope_type": "default", "rope_theta": 500.0},
    "linear": {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8, "rope_theta": 500.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8, "rope_theta": 500.0},
    "yarn-attention-factor": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8,
                              "attention_factor": 0.8, "beta_fast": 16.0, "rope_theta": 500.0},
    "dynamic": {"rope_type": "dynamic", "factor": 3.0, "rope_theta": 500.0},
    "longrope": {"rope_type": "longrope", "short_factor": [1.0, 1.1, 1.3, 1.6],
                 "long_factor": [1.5, 2.0, 3.0, 4.5], "factor": 2.0, "original_max_position_embeddings": 16,
                 "rope_theta": 500.0},
}  # fmt: skip


def _hf(name: str):
    return tiny_llama(rope_parameters=dict(ROPES[name]), max_position_embeddings=MAX_POS)


def _config(name: str) -> LlamaConfig:
    """A Llama config with the RoPE of `name`: head_dim 8, as `_hf` builds."""
    return LlamaConfig(hidden_size=48, num_attention_heads=6, num_key_value_heads=2, num_hidden_layers=1,
                       vocab_size=96, rope_parameters=dict(ROPES[name]), max_position_embeddings=MAX_POS)


def _rotary(name: str) -> RotaryEmbedding:
    return RotaryEmbedding(hf_config_to_native(_config(name)))


@pytest.mark.parametrize("name", list(ROPES))
@pytest.mark.parametrize("length", [5, 20, 48])
def test_cos_sin_equal_transformers_at_every_position(name, length):
    """One call over positions 0 .. length-1, as a fresh transformers model runs a sequence of that length."""
    reference = LlamaRotaryEmbedding(_config(name))  # fresh: dynamic RoPE remembers lengths it has seen
    cos_hf, sin_hf = reference(torch.zeros(1), torch.arange(length)[None])
    cos, sin = _rotary(name).cos_sin(0, length, torch.device("cpu"), torch.float32)
    assert torch.equal(cos, cos_hf[0]) and torch.equal(sin, sin_hf[0]), f"{name} at length {length}"


def test_yarn_attention_factor_scales_cos_sin():
    derived = 0.1 * math.log(4.0) + 1.0  # yarn's mscale for factor 4
    for name, factor in (("yarn", derived), ("yarn-attention-factor", 0.8)):
        cos, _ = _rotary(name).cos_sin(0, 1, torch.device("cpu"), torch.float32)
        assert cos[0, 0].item() == pytest.approx(factor, rel=1e-6), name  # cos(0) = 1, times the factor


@pytest.mark.parametrize("name", [n for n in ROPES if n != "default"])
def test_logits_match_transformers(name, tmp_path):
    hf = _hf(name)
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    assert model.config.rope_type == ROPES[name]["rope_type"]
    x = torch.randint(0, 96, (2, 48))  # past max_position_embeddings: dynamic and longrope switch
    with torch.no_grad():
        reference = hf(x).logits
        assert_close(model(x), reference, atol=1e-4, what=f"rope {name}")
        # the scaling shows in the logits: the same weights with plain RoPE are another function
        config, state = read_checkpoint(tmp_path)
        plain = build_model(dataclasses.replace(config, rope_parameters=None), state)
        assert (plain(x) - reference).abs().max() > 1e-2


def test_dynamic_frequencies_follow_the_sequence_length(tmp_path):
    """Below max_position_embeddings dynamic RoPE is plain RoPE; beyond it the first positions change too."""
    hf = _hf("dynamic")
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    x = torch.randint(0, 96, (1, 40))
    with torch.no_grad():
        short, long = model(x[:, :MAX_POS]), model(x)
        assert_close(short, hf(x[:, :MAX_POS]).logits, what="dynamic at max_position_embeddings")
        assert (long[:, :MAX_POS] - short).abs().max() > 1e-3


def test_legacy_rope_scaling_key_imports(tmp_path):
    hf = _hf("linear")
    hf.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    raw = json.loads(path.read_text())
    raw["rope_scaling"] = {"type": "linear", "factor": 2.0}
    raw["rope_theta"] = raw.pop("rope_parameters")["rope_theta"]
    path.write_text(json.dumps(raw))
    model = load_model(tmp_path)
    assert model.config.rope_type == "linear" and model.config.rope_theta == 500.0
    x = torch.randint(0, 96, (1, 40))
    with torch.no_grad():
        assert_close(model(x), hf(x).logits, what="legacy rope_scaling")


@pytest.mark.parametrize("name", ["yarn-attention-factor", "longrope"])
def test_rope_parameters_survive_config_yaml_and_export(name, tmp_path):
    hf = tiny_qwen3(rope_parameters=dict(ROPES[name]), max_position_embeddings=MAX_POS)
    hf.save_pretrained(tmp_path / "hf")
    written = json.loads((tmp_path / "hf" / "config.json").read_text())["rope_parameters"]
    config0, _ = read_hf(tmp_path / "hf")
    assert config0.rope_parameters == written
    save_native(load_model(tmp_path / "hf"), tmp_path / "native")
    assert read_native(tmp_path / "native")[0] == config0  # strict config.yaml loader, same dict
    save_hf(load_model(tmp_path / "native"), tmp_path / "export")
    assert json.loads((tmp_path / "export" / "config.json").read_text())["rope_parameters"] == written
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    x = torch.randint(0, 96, (1, 40))
    with torch.no_grad():
        assert_close(exported(x).logits, hf(x).logits, atol=0.0, what=f"{name}: export vs original")
