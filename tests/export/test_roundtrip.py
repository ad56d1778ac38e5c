# SPDX-License-Identifier: Apache-2.0
"""HF -> native -> HF round trips: tensors unchanged bit for bit, and the export loads in transformers."""

import json

import pytest
import torch
from export_testlib import assert_close, tiny_llama, tiny_nemotron_h
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from nemotron_elastic.checkpoint import load_model, read_native, save_native
from nemotron_elastic.checkpoint.hf import read_hf, save_hf
from nemotron_elastic.io import load_tokenizer


def _file_keys(folder):
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        return set(f.keys())


@pytest.mark.parametrize(
    "make",
    [
        lambda: tiny_nemotron_h(use_bias=True, mlp_bias=True),
        lambda: tiny_nemotron_h(tie_word_embeddings=True),
        lambda: tiny_llama(),
        lambda: tiny_llama(tie_word_embeddings=False, attention_bias=True),
    ],
    ids=["nemotron_h", "nemotron_h-tied-config", "llama-tied", "llama-untied-bias"],
)
def test_import_save_native_load_save_hf_read_hf_is_identity(make, tmp_path):
    hf = make()
    hf.save_pretrained(tmp_path / "hf")
    config0, tensors0 = read_hf(tmp_path / "hf")

    model = load_model(tmp_path / "hf")
    save_native(model, tmp_path / "native")
    config1, tensors1 = read_native(tmp_path / "native")
    assert config1 == config0

    reloaded = load_model(tmp_path / "native")
    save_hf(reloaded, tmp_path / "export")
    config2, tensors2 = read_hf(tmp_path / "export")
    assert config2 == config0
    assert tensors2.keys() == tensors0.keys()
    for key in tensors0:
        assert torch.equal(tensors2[key], tensors0[key]), key
    # the export uses the key names transformers itself writes (backbone. for NemotronH, model. for Llama)
    assert _file_keys(tmp_path / "export") == _file_keys(tmp_path / "hf")

    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    assert type(exported) is type(hf)
    x = torch.randint(0, hf.config.vocab_size, (2, 17))
    with torch.no_grad():
        reference = hf(x).logits
        assert_close(exported(x).logits, reference, atol=0.0, what="exported HF model vs original")
        assert_close(reloaded(x), reference, atol=1e-4, what="native vs original")


def test_exported_config_is_stock_and_generation_config_written(tmp_path):
    hf = tiny_nemotron_h(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    hf.save_pretrained(tmp_path / "hf")
    save_hf(load_model(tmp_path / "hf"), tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "nemotron_h" and config["architectures"] == ["NemotronHForCausalLM"]
    assert "auto_map" not in config  # no custom code needed
    generation = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2


def test_save_hf_rejects_heterogeneous_widths(tmp_path):
    hf = tiny_nemotron_h()
    hf.save_pretrained(tmp_path / "hf")
    config, tensors = read_hf(tmp_path / "hf")
    from dataclasses import replace

    from nemotron_elastic.checkpoint import build_model

    hetero = replace(config, intermediate_size=[48, 32])
    tensors["layers.4.mixer.up_proj.weight"] = tensors["layers.4.mixer.up_proj.weight"][:32]
    tensors["layers.4.mixer.down_proj.weight"] = tensors["layers.4.mixer.down_proj.weight"][:, :32]
    model = build_model(hetero, tensors)
    with pytest.raises(ValueError, match="heterogeneous"):
        save_hf(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    save_native(model, tmp_path / "native")  # native checkpoints hold per-layer widths
    assert read_native(tmp_path / "native")[0].intermediate_size == [48, 32]


def test_tokenizer_is_saved_and_loaded(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    hf = tiny_llama()
    hf.save_pretrained(tmp_path / "hf")
    model = load_model(tmp_path / "hf")
    assert load_tokenizer(tmp_path / "hf") is None
    save_native(model, tmp_path / "native", tokenizer=raw)
    tok = load_tokenizer(tmp_path / "native")
    assert tok("hello world")["input_ids"] == [1, 2]
    save_hf(model, tmp_path / "export", tokenizer=tok)
    assert load_tokenizer(tmp_path / "export")("world hello")["input_ids"] == [2, 1]


def test_sharded_safetensors_checkpoint_loads(tmp_path):
    hf = tiny_nemotron_h()
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    model = load_model(tmp_path)
    x = torch.randint(0, 96, (1, 9))
    with torch.no_grad():
        assert_close(model(x), hf(x).logits, what="sharded NemotronH")
