# SPDX-License-Identifier: Apache-2.0
"""Bad model paths and checkpoints fail with one clear line; failing saves leave nothing behind."""

import json

import pytest
import torch
from export_testlib import tiny_llama, tiny_nemotron_h
from safetensors.torch import load_file, save_file

from nemotron_elastic.checkpoint import load_model, save_native
from nemotron_elastic.checkpoint.hf import read_hf, save_hf
from nemotron_elastic.config.types import ConfigError


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
    _raises_one_line(ValueError, "MoE", read_hf, hf_dir)


def test_rope_scaling_is_unsupported(tmp_path):
    tiny_llama().save_pretrained(tmp_path)
    _edit_config(tmp_path, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0})
    _raises_one_line(ValueError, "unsupported rope type 'linear'", read_hf, tmp_path)


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
