# SPDX-License-Identifier: Apache-2.0
"""Bad model paths and checkpoints fail with one clear line; failing saves leave nothing behind."""

import json
from dataclasses import replace

import pytest
import torch
from export_testlib import tiny_llama, tiny_nemotron_h, tiny_qwen2, tiny_qwen3
from safetensors.torch import load_file, save_file

from nemotron_elastic.checkpoint import build_model, load_model, save_native
from nemotron_elastic.checkpoint.hf import read_hf, save_hf
from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.config.types import ConfigError
from nemotron_elastic.subnet.slicing import slice_model


def _raises_one_line(exc_type, match, fn, *args):
    with pytest.raises(exc_type, match=match) as err:
        fn(*args)
    assert "\n" not in str(err.value), f"multi-line error: {err.value}"
    return str(err.value)


@pytest.fixture
def hf_dir(tmp_path):
    folder = tmp_path / "hf"
    tiny_nemotron_h().save_pretrained(folder)
    return folder


def _edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_missing_path(tmp_path):
    _raises_one_line(FileNotFoundError, "no such file or folder", load_model, tmp_path / "nope")


def test_empty_folder_is_not_a_model(tmp_path):
    _raises_one_line(ValueError, "not a model folder", load_model, tmp_path)


def test_hf_folder_without_weights(hf_dir):
    (hf_dir / "model.safetensors").unlink()
    _raises_one_line(FileNotFoundError, "folder without weights", load_model, hf_dir)


def test_native_folder_without_weights(hf_dir, tmp_path):
    save_native(load_model(hf_dir), tmp_path / "native")
    (tmp_path / "native" / "model.safetensors").unlink()
    _raises_one_line(FileNotFoundError, "no model.safetensors", load_model, tmp_path / "native")


def test_pickle_only_folder_is_refused(hf_dir):
    (hf_dir / "model.safetensors").unlink()
    (hf_dir / "pytorch_model.bin").write_bytes(b"not unpickled")
    _raises_one_line(ValueError, "safetensors is required", load_model, hf_dir)


def test_unknown_model_type(hf_dir):
    _edit_config(hf_dir, model_type="gpt2")
    message = _raises_one_line(ValueError, "unsupported model_type 'gpt2'", load_model, hf_dir)
    assert "nemotron_h" in message and "llama" in message


def test_moe_blocks_are_unsupported(hf_dir):
    _edit_config(hf_dir, layers_block_type=["linear_attention", "moe", "mlp"])
    message = _raises_one_line(ValueError, "MoE", read_hf, hf_dir)
    assert "hybrid_override_pattern 'ME-'" in message


def test_unknown_model_type_lists_every_family(hf_dir):
    _edit_config(hf_dir, model_type="gemma3")
    message = _raises_one_line(ValueError, "unsupported model_type 'gemma3'", read_hf, hf_dir)
    assert all(f in message for f in ("nemotron_h", "llama", "qwen2", "qwen3", "mistral"))


@pytest.mark.parametrize(
    "rope, match",
    [
        ({"rope_type": "proportional", "rope_theta": 500.0, "partial_rotary_factor": 0.5},
         r"unsupported rope_parameters\.rope_type 'proportional'"),
        ({"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0, "partial_rotary_factor": 0.5},
         r"rope_parameters\.partial_rotary_factor 0\.5"),
        ({"full_attention": {"rope_type": "default", "rope_theta": 500.0}}, "per layer type"),
    ],
)  # fmt: skip
def test_unsupported_rope_is_one_line_naming_the_key(tmp_path, rope, match):
    tiny_llama().save_pretrained(tmp_path)
    _edit_config(tmp_path, rope_parameters=rope)
    _raises_one_line(ValueError, match, read_hf, tmp_path)


def test_qwen_window_on_some_layers_only_is_refused(tmp_path):
    tiny_qwen2(use_sliding_window=True, sliding_window=4, max_window_layers=1).save_pretrained(tmp_path)
    _raises_one_line(ValueError, "layer_types has sliding_attention on 2 of 3 layers", read_hf, tmp_path)


@pytest.mark.parametrize(
    "old, new, match",
    [
        ("rope_type: yarn", "rope_type: ntk", r"rope_parameters\.rope_type: unsupported rope type 'ntk'"),
        ("  factor: 4.0\n", "", r"rope_parameters\.factor: required for rope type 'yarn'"),
        ("sliding_window: null", "sliding_window: 0", r"sliding_window: must be a positive integer"),
    ],
)
def test_native_config_yaml_rope_and_window_errors(tmp_path, old, new, match):
    yarn = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 500.0}
    tiny_llama(rope_parameters=yarn).save_pretrained(tmp_path)
    save_native(load_model(tmp_path), tmp_path / "native")
    path = tmp_path / "native" / "config.yaml"
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))
    _raises_one_line(ConfigError, match, load_model, tmp_path / "native")


def test_export_refuses_what_the_stock_class_cannot_express(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "hf")
    config, state = read_hf(tmp_path / "hf")
    windowed = build_model(replace(config, sliding_window=8), state)
    match = "stock Llama class cannot express sliding_window=8"
    _raises_one_line(ValueError, match, save_hf, windowed, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_remote_code_export_refuses_family_features(tmp_path):
    """A per-layer Qwen3 sub-model needs q/k norms, which the shipped modeling code does not implement."""
    tiny_qwen3().save_pretrained(tmp_path / "hf")
    parent = load_model(tmp_path / "hf")
    per_layer = slice_model(parent, SubnetSpec.from_dict({"attention_heads": [4, 2, 4]}, parent.config))
    _raises_one_line(ValueError, "does not implement config field attention_qk_norm", save_hf, per_layer,
                     tmp_path / "o", None, False, True)
    assert not (tmp_path / "o").exists()


def test_shape_mismatch_names_key_and_shapes(hf_dir):
    _edit_config(hf_dir, intermediate_size=40)
    message = _raises_one_line(ValueError, r"backbone\.layers\.2\.mixer\.up_proj\.weight", read_hf, hf_dir)
    assert "(48, 32)" in message and "(40, 32)" in message


def test_unexpected_and_missing_keys_are_named(hf_dir):
    weights = hf_dir / "model.safetensors"
    tensors = load_file(weights)
    tensors["backbone.layers.0.mixer.surprise"] = torch.zeros(3)
    del tensors["backbone.norm_f.weight"]
    save_file(tensors, weights)
    message = _raises_one_line(
        ValueError, "unexpected keys: backbone.layers.0.mixer.surprise", read_hf, hf_dir
    )
    assert "missing keys: backbone.norm_f.weight" in message


def test_model_prefix_is_accepted_and_mtp_ignored(hf_dir):
    """Checkpoints renamed by transformers (model.) load too; multi-token-prediction heads are skipped."""
    weights = hf_dir / "model.safetensors"
    tensors = {k.replace("backbone.", "model."): v for k, v in load_file(weights).items()}
    tensors["mtp.layers.0.norm.weight"] = torch.ones(32)
    save_file(tensors, weights)
    _, state = read_hf(hf_dir)
    assert "norm_f.weight" in state and not any(k.startswith("mtp") for k in state)


def test_malformed_and_unknown_keys_in_config_yaml(hf_dir, tmp_path):
    native = tmp_path / "native"
    save_native(load_model(hf_dir), native)
    text = (native / "config.yaml").read_text()
    (native / "config.yaml").write_text(text + "hiden_size: 3\n")
    _raises_one_line(ConfigError, "hiden_size: unknown key", load_model, native)
    (native / "config.yaml").write_text("pattern: [unclosed\n")
    _raises_one_line(ConfigError, "invalid YAML", load_model, native)


def test_native_shape_mismatch(hf_dir, tmp_path):
    native = tmp_path / "native"
    save_native(load_model(hf_dir), native)
    text = (native / "config.yaml").read_text().replace("hidden_size: 32", "hidden_size: 16")
    (native / "config.yaml").write_text(text)
    _raises_one_line(
        ValueError, r"embeddings\.weight has shape \(96, 32\), expected \(96, 16\)", load_model, native
    )


def test_failing_save_leaves_parent_unchanged(hf_dir, tmp_path):
    class BrokenTokenizer:
        def save_pretrained(self, folder):
            raise RuntimeError("disk full")

    model = load_model(hf_dir)
    parent = tmp_path / "runs"
    parent.mkdir()
    (parent / "keep.txt").write_text("x")
    for save in (save_native, save_hf):
        with pytest.raises(RuntimeError, match="disk full"):
            save(model, parent / "out", BrokenTokenizer())
        assert sorted(p.name for p in parent.iterdir()) == ["keep.txt"]
    # a missing parent chain created for the save is removed again
    with pytest.raises(RuntimeError):
        save_native(model, tmp_path / "a" / "b" / "out", BrokenTokenizer())
    assert not (tmp_path / "a").exists()


def test_existing_folder_needs_overwrite_and_is_replaced_whole(hf_dir, tmp_path):
    model = load_model(hf_dir)
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    _raises_one_line(FileExistsError, "overwrite=True", save_native, model, out)
    assert (out / "stale.txt").exists()
    save_native(model, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "out"]  # no temporary folders left
    save_native(model, tmp_path / "empty_ok")  # an empty existing folder is fine
