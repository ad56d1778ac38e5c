# SPDX-License-Identifier: Apache-2.0
"""Per-layer Llama sub-models exported in NVIDIA's DeciLM / Llama-Nemotron format (model_type "nemotron-nas").

- transformers loads the export through `auto_map` and gives the native sub-model's logits (fp32, 1e-4), with
  llama3 RoPE, q/k/v/o biases, a dropped attention and a dropped MLP;
- config.json and tensor names hold what vLLM 0.34.0's DeciLM loader reads (read from the wheel:
  vllm/model_executor/models/nemotron_nas.py, registry.py, transformers_utils/model_arch_config_convertor.py;
  no engine runs here, docs/SERVING.md "Engines");
- the config has the keys and block structure of nvidia/Llama-3_3-Nemotron-Super-49B-v1's config.json
  (fixtures/decilm_llama_nemotron_super_49b.json, an abridged verbatim copy; its "_source" says where from),
  and that published config is read by our config class and importer;
- `--format decilm` refuses what DeciLM's size rule cannot express in one line naming the axis; `auto` picks
  DeciLM when it can, else our own format; import -> export -> import is bit-identical.

The parent's MLPs are 512 wide so that widths of 256 and 512 are expressible at any hidden size (DeciLM rounds
every MLP width up to a multiple of 256); 200 is not.
"""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from test_subnet_export import make_parent, native_sub, word_tokenizer
from transformers import AutoConfig, AutoModelForCausalLM

from nemotron_elastic.checkpoint import load_model, save_native
from nemotron_elastic.checkpoint.decilm import native_config_from_decilm
from nemotron_elastic.checkpoint.hf import read_hf
from nemotron_elastic.config.model import ModelConfig
from nemotron_elastic.export import export_subnet

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "decilm_llama_nemotron_super_49b.json").read_text())
LLAMA3 = {"rope_type": "llama3", "rope_theta": 500.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8}  # fmt: skip
PARENT = ModelConfig(
    family="llama", pattern="*-" * 3, vocab_size=96, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
    head_dim=8, rope_theta=500.0, rope_parameters=LLAMA3, intermediate_size=512, mlp_gated=True,
    mlp_activation="silu", attention_bias=True, max_position_embeddings=64,
)  # fmt: skip
# per-layer MLP widths, a narrower hidden size, 2 query heads; blocks 2 (attention) and 5 (MLP) dropped:
# pattern "*--*" -> layers (attention, MLP 512), (no_op attention, MLP 256), (attention, no_op MLP)
SPEC = {"hidden": 24, "mlp": [512, 256, 256], "attention_heads": 2, "layers": [0, 1, 3, 4]}
IDS = torch.randint(0, 96, (2, 13), generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(parent, root folder with parent/ and out/, ExportResult)."""
    root = tmp_path_factory.mktemp("decilm")
    parent = make_parent(PARENT, 3)
    save_native(parent, root / "parent", tokenizer=word_tokenizer())
    return parent, root, export_subnet(root / "parent", root / "out", spec=SPEC)


def test_auto_picks_decilm_and_transformers_matches_native(exported):
    parent, root, result = exported
    assert result.kind == "decilm" and "vLLM" in result.engines and "not llama.cpp" in result.engines
    hf = AutoModelForCausalLM.from_pretrained(root / "out", trust_remote_code=True).eval()
    assert type(hf).__name__ == "DeciLMForCausalLM"
    sub = native_sub(parent, SPEC)
    assert sum(p.numel() for p in hf.parameters()) == sub.num_parameters() == result.num_parameters
    with torch.no_grad():
        diff = (hf(IDS).logits.double() - sub(IDS).double()).abs().max().item()
        out = hf.generate(IDS[:1, :5], max_new_tokens=4, do_sample=False)  # the decoding cache
    assert diff <= 1e-4, f"DeciLM export vs native sub-model: max abs diff {diff:.3e}"
    ids = IDS[:1, :5]
    for _ in range(4):
        ids = torch.cat([ids, sub(ids)[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(out, ids)


def test_config_and_tensor_names_are_what_vllm_reads(exported):
    _, root, _ = exported
    raw = json.loads((root / "out" / "config.json").read_text())
    assert raw["architectures"] == ["DeciLMForCausalLM"] and raw["model_type"] == "nemotron-nas"  # vLLM registry
    config = AutoConfig.from_pretrained(root / "out", trust_remote_code=True)  # how vLLM builds hf_config
    # nemotron_nas.py DeciLMDecoderLayer / DeciModel / LlamaAttention, and the nemotron-nas arch convertor
    for name in ("hidden_size", "num_attention_heads", "head_dim", "rms_norm_eps", "vocab_size", "hidden_act",
                 "max_position_embeddings", "attention_bias", "mlp_bias", "num_hidden_layers", "rope_parameters"):  # fmt: skip
        assert getattr(config, name) is not None, name
    blocks = config.block_configs
    assert len(blocks) == config.num_hidden_layers == 3
    assert [b.attention.no_op for b in blocks] == [False, True, False]
    assert [b.ffn.no_op for b in blocks] == [False, False, True]
    kv = [config.num_attention_heads // b.attention.n_heads_in_group for b in blocks if not b.attention.no_op]
    assert kv == [2, 2] and config.num_attention_heads == 2
    widths = [int(2 * b.ffn.ffn_mult * config.hidden_size / 3) for b in blocks if not b.ffn.no_op]
    assert [-(-w // 256) * 256 for w in widths] == [512, 256]  # vLLM's _ffn_mult_to_intermediate_size
    assert config.rope_parameters["rope_type"] == "llama3" and raw["rope_parameters"]["rope_type"] == "llama3"
    with safe_open(str(root / "out" / "model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    assert {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"} <= set(shapes)
    attn = {f"self_attn.{p}_proj.{w}" for p in "qkvo" for w in ("weight", "bias")} | {"input_layernorm.weight"}
    mlp = {f"mlp.{p}_proj.weight" for p in ("gate", "up", "down")} | {"post_attention_layernorm.weight"}
    for i, want in enumerate([attn | mlp, mlp, attn]):
        got = {k.removeprefix(f"model.layers.{i}.") for k in shapes if k.startswith(f"model.layers.{i}.")}
        assert got == want, (i, got ^ want)
    assert shapes["model.layers.1.mlp.gate_proj.weight"] == (256, 24)
    assert shapes["model.layers.0.self_attn.k_proj.weight"] == (2 * 8, 24)


def test_config_has_the_published_llama_nemotron_structure(exported):
    _, root, _ = exported
    raw, published = json.loads((root / "out" / "config.json").read_text()), FIXTURE["config"]
    assert raw["architectures"] == published["architectures"] and raw["model_type"] == published["model_type"]
    assert set(published["auto_map"]) <= set(raw["auto_map"])
    # _name_or_path is a training-run name; transformers 5 writes `dtype` where 4.48 wrote `torch_dtype`, and
    # `rope_parameters` where 4.48 wrote `rope_scaling` (both read back: test_the_published_config_reads...)
    missing = set(published) - {"_name_or_path", "torch_dtype", "rope_scaling"} - set(raw)
    assert not missing, f"keys of the published config missing from ours: {sorted(missing)}"
    assert raw["num_key_value_heads"] is None and raw["intermediate_size"] is None  # per layer, as published
    for block in raw["block_configs"]:
        for part in ("attention", "ffn"):
            assert set(block[part]) == set(published["block_configs"][0][part]), (part, block[part])
    # dropped halves are written as published: no_op with a null group / multiplier
    assert raw["block_configs"][1]["attention"] == published["block_configs"][1]["attention"]
    assert raw["block_configs"][2]["ffn"] == published["block_configs"][2]["ffn"]


def test_the_published_config_reads_as_a_native_llama():
    published = {**FIXTURE["config"], "auto_map": None}
    config = native_config_from_decilm(published, "super-49b/config.json")
    # layer 0: attention + MLP (2.625 * 8192 * 2/3 = 14336), layer 1: MLP only, layer 2: nothing
    assert config.pattern == "*--" and config.mlp_sizes_per_layer() == [14336, 14336]
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (64, 8, 128)
    assert config.rope_type == "llama3" and config.rope_theta == 500000.0 and config.eos_token_id == 128001


def test_round_trip_is_bit_identical(exported, tmp_path):
    parent, root, _ = exported
    config, tensors = read_hf(root / "out")
    sub = native_sub(parent, SPEC)
    assert config == sub.config
    state = sub.state_dict()
    assert set(tensors) == set(state) and all(torch.equal(t, state[k]) for k, t in tensors.items())
    again = export_subnet(root / "out", tmp_path / "again", fmt="decilm")  # import -> export -> import
    config2, tensors2 = read_hf(again.path)
    assert config2 == config and all(torch.equal(tensors2[k], t) for k, t in tensors.items())
    assert (load_model(again.path)(IDS) - sub(IDS)).abs().max().item() == 0.0


@pytest.mark.parametrize("fmt,spec,axis", [
    ("decilm", {"mlp": [512, 200, 256]}, "axis mlp"),
    ("decilm", {"attention_heads": [4, 2, 4]}, "axis attention_heads"),
    ("hf", SPEC, "axis mlp"),
])  # fmt: skip
def test_format_that_cannot_express_the_spec_names_the_axis(exported, tmp_path, fmt, spec, axis):
    _, root, _ = exported
    with pytest.raises(ValueError, match=axis) as err:
        export_subnet(root / "parent", tmp_path / "out", spec=spec, fmt=fmt)
    assert "\n" not in str(err.value) and f"format {fmt}" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_auto_falls_back_to_own_format_and_decilm_refuses_other_families(exported, tmp_path):
    _, root, _ = exported
    # MLP width 200 is no multiple of 256: DeciLM cannot express it, our own format can (any RoPE type)
    save_native(make_parent(replace(PARENT, rope_parameters=None), 4), tmp_path / "plain")
    own = export_subnet(tmp_path / "plain", tmp_path / "own", spec={"mlp": [512, 200, 256]})
    assert own.kind == "hf-remote-code"
    # a uniform width with one block dropped has no stock Llama form, but DeciLM's no_op expresses it
    assert export_subnet(root / "parent", tmp_path / "deep", spec={"layers": [0, 1, 2, 4, 5]}).kind == "decilm"
    hybrid = ModelConfig(pattern="M*-", vocab_size=96, hidden_size=32, intermediate_size=256, head_dim=8)
    save_native(make_parent(hybrid, 0), tmp_path / "hybrid")
    with pytest.raises(ValueError, match="format decilm: .*Llama's; this is a nemotron_h model") as err:
        export_subnet(tmp_path / "hybrid", tmp_path / "x", fmt="decilm")
    assert "\n" not in str(err.value)


def test_cli_says_which_engines_load_it(exported, tmp_path, capsys):
    from nemotron_elastic.cli import main

    _, root, _ = exported
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    args = ["export", "--model", root / "parent", "--spec", tmp_path / "spec.json", "--no-verify"]
    assert main([str(a) for a in [*args, "--out", tmp_path / "ok", "--format", "decilm"]]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "decilm" in out[0] and out[1].startswith("loads in: transformers (trust_remote_code=True) and vLLM")
