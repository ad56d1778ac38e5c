# SPDX-License-Identifier: Apache-2.0
"""Per-layer MLP sub-models of a NemotronH parent exported in NVIDIA's heterogeneous "Puzzle" format.

- transformers loads the export through `auto_map` and gives the native sub-model's logits (fp32, 1e-4);
- config.json and tensor names hold what vLLM 0.34.0's NemotronH loader reads (read from the wheel:
  vllm/model_executor/models/nemotron_h.py and registry.py; no engine runs here, docs/SERVING.md);
- the config has the keys and structure of NVIDIA's published Puzzle checkpoint, as recorded in
  fixtures/nemotron_h_puzzle_structure.json (reconstructed from code that reads nvidia/NVIDIA-Nemotron-Labs-3-
  Puzzle-75B-A9B's config.json; the file itself could not be fetched here: see its "_source");
- import -> export -> import is bit-identical; `--format` refuses what it cannot express, naming the axis.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from test_subnet_export import HYBRID, LLAMA, make_parent, native_sub, word_tokenizer
from transformers import AutoConfig, AutoModelForCausalLM

from nemotron_elastic.checkpoint import load_model, save_native
from nemotron_elastic.checkpoint.hf import read_hf
from nemotron_elastic.export import export_subnet

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "nemotron_h_puzzle_structure.json").read_text())
# per-layer MLP widths, a narrower hidden size and Mamba heads (uniform), one layer dropped
SPEC = {"hidden": 24, "mlp": [40, 16, 8], "mamba_heads": 4, "layers": [0, 1, 2, 3, 4, 6, 7]}
IDS = torch.randint(0, 96, (2, 13), generator=torch.Generator().manual_seed(2))
# What vLLM 0.34.0 reads from the config object (nemotron_h.py: NemotronHModel, the four decoder layers,
# NemotronHForCausalLM's Mamba state shapes; the arch-config convertor).
VLLM_GLOBAL = ("vocab_size", "hidden_size", "hybrid_override_pattern", "layer_norm_epsilon", "ssm_state_size",
               "conv_kernel", "mamba_num_heads", "mamba_head_dim", "use_conv_bias", "use_bias", "n_groups",
               "mamba_hidden_act", "num_attention_heads", "num_key_value_heads", "head_dim", "num_hidden_layers",
               "chunk_size")  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(parent, folder of the Puzzle export, ExportResult)."""
    root = tmp_path_factory.mktemp("puzzle")
    parent = make_parent(HYBRID, 0)
    save_native(parent, root / "parent", tokenizer=word_tokenizer())
    result = export_subnet(root / "parent", root / "out", spec=SPEC)
    return parent, root, result


def test_auto_picks_puzzle_and_transformers_matches_native(exported):
    parent, root, result = exported
    assert result.kind == "puzzle" and "vLLM" in result.engines and "not llama.cpp" in result.engines
    hf = AutoModelForCausalLM.from_pretrained(root / "out", trust_remote_code=True).eval()
    assert type(hf).__name__ == "NemotronHPuzzleForCausalLM"
    sub = native_sub(parent, SPEC)
    assert sum(p.numel() for p in hf.parameters()) == sub.num_parameters() == result.num_parameters
    with torch.no_grad():
        diff = (hf(IDS).logits.double() - sub(IDS).double()).abs().max().item()
    assert diff <= 1e-4, f"Puzzle export vs native sub-model: max abs diff {diff:.3e}"


def test_config_and_tensor_names_are_what_vllm_reads(exported):
    _, root, _ = exported
    raw = json.loads((root / "out" / "config.json").read_text())
    assert raw["architectures"] == ["NemotronHPuzzleForCausalLM"]  # vLLM registry: -> nemotron_h.NemotronHForCausalLM
    config = AutoConfig.from_pretrained(root / "out", trust_remote_code=True)  # how vLLM builds hf_config
    for name in VLLM_GLOBAL:
        assert getattr(config, name) is not None, name
    assert config.hybrid_override_pattern == "M*-M-M-" and config.num_hidden_layers == 7
    mlp_widths = [config.get_nemotron_h_config_for_layer(i).intermediate_size
                  for i, c in enumerate(config.hybrid_override_pattern) if c == "-"]  # fmt: skip
    assert mlp_widths == [40, 16, 8]  # NemotronHMLPDecoderLayer: the per-layer view's int intermediate_size
    attn = config.get_nemotron_h_config_for_layer(1)
    assert (attn.num_attention_heads, attn.num_key_value_heads, attn.head_dim) == (4, 2, 8)
    # MoE keys would make loaders (llama.cpp's has_moe_params, vLLM's num_experts) take it for a MoE model
    assert not {"num_experts_per_tok", "n_routed_experts"} & set(raw)
    # tensor names: vLLM maps backbone. -> model., embeddings -> embed_tokens, A_log -> A, q/k/v -> qkv_proj
    with safe_open(str(root / "out" / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert {"backbone.embeddings.weight", "backbone.norm_f.weight", "lm_head.weight"} <= names
    per_type = {"M": {"in_proj.weight", "conv1d.weight", "dt_bias", "A_log", "D", "norm.weight", "out_proj.weight"},
                "*": {"q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"},
                "-": {"up_proj.weight", "down_proj.weight"}}  # fmt: skip
    for i, c in enumerate(config.hybrid_override_pattern):
        mixer = {n.removeprefix(f"backbone.layers.{i}.mixer.") for n in names if n.startswith(f"backbone.layers.{i}.mixer.")}
        assert per_type[c] <= mixer, (i, c, mixer)
        assert f"backbone.layers.{i}.norm.weight" in names


def test_config_has_the_published_puzzle_structure(exported):
    _, root, _ = exported
    raw = json.loads((root / "out" / "config.json").read_text())
    assert raw["architectures"] == FIXTURE["architectures"] and raw["model_type"] == FIXTURE["model_type"]
    assert set(FIXTURE["auto_map"]) <= set(raw["auto_map"])
    missing = set(FIXTURE["top_level_keys"]) - set(FIXTURE["moe_only_keys"]) - set(raw)
    assert not missing, f"keys of the published Puzzle config missing from ours: {sorted(missing)}"
    examples = {b["block_type"]: set(b) for b in FIXTURE["block_examples"]}
    assert len(raw["block_configs"]) == raw["num_hidden_layers"] == len(raw["layers_block_type"])
    for block in raw["block_configs"]:
        assert set(block) == examples[block["block_type"]], block  # same keys per block type
    assert raw["layers_block_type"] == [b["block_type"] for b in raw["block_configs"]]


def test_round_trip_is_bit_identical(exported, tmp_path):
    parent, root, _ = exported
    config, tensors = read_hf(root / "out")
    sub = native_sub(parent, SPEC)
    assert config == sub.config
    assert set(tensors) == set(sub.state_dict()) and all(torch.equal(t, sub.state_dict()[k]) for k, t in tensors.items())
    again = export_subnet(root / "out", tmp_path / "again", fmt="puzzle")  # import -> export -> import
    config2, tensors2 = read_hf(again.path)
    assert config2 == config and all(torch.equal(tensors2[k], t) for k, t in tensors.items())
    assert (load_model(again.path)(IDS) - sub(IDS)).abs().max().item() == 0.0


@pytest.mark.parametrize("fmt,spec,axis", [
    ("hf", SPEC, "axis mlp"),
    ("puzzle", {"attention_heads": [4, 2]}, "axis attention_heads"),
    ("puzzle", {"mamba_heads": [2, 8, 4]}, "axis mamba_heads"),
])  # fmt: skip
def test_format_that_cannot_express_the_spec_names_the_axis(exported, tmp_path, fmt, spec, axis):
    _, root, _ = exported
    with pytest.raises(ValueError, match=axis) as err:
        export_subnet(root / "parent", tmp_path / "out", spec=spec, fmt=fmt)
    assert "\n" not in str(err.value) and f"format {fmt}" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_puzzle_refuses_a_llama_parent_and_bad_format_names(tmp_path):
    save_native(make_parent(LLAMA, 1), tmp_path / "llama")
    with pytest.raises(ValueError, match="format puzzle: .*llama"):
        export_subnet(tmp_path / "llama", tmp_path / "out", spec={"mlp": [64, 24, 8]}, fmt="puzzle")
    with pytest.raises(ValueError, match="format: must be one of auto, hf, puzzle, decilm, native"):
        export_subnet(tmp_path / "llama", tmp_path / "out", fmt="gguf")
    assert export_subnet(tmp_path / "llama", tmp_path / "out", spec={"mlp": 40}).kind == "hf"  # auto: stock


def test_cli_says_which_engines_load_it_and_refuses_in_one_line(exported, tmp_path, capsys):
    from nemotron_elastic.cli import main

    _, root, _ = exported
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    args = ["export", "--model", root / "parent", "--spec", tmp_path / "spec.json", "--no-verify"]
    assert main([str(a) for a in [*args, "--out", tmp_path / "ok"]]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "puzzle" in out[0] and out[1].startswith("loads in: transformers (trust_remote_code=True) and vLLM")
    code = main([str(a) for a in [*args, "--out", tmp_path / "bad", "--format", "hf"]])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "axis mlp" in err, err
