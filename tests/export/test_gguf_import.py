# SPDX-License-Identifier: Apache-2.0
"""GGUF import: a tiny F32 llama GGUF written here (fast), and the packaged SmolLM2-135M file.

Reference logits come from transformers loading the same file (`from_pretrained(..., gguf_file=)`).
"""

import pytest
import torch
from export_testlib import assert_close, tiny_llama, write_tiny_gguf
from transformers import AutoModelForCausalLM

from nemotron_elastic.checkpoint import load_model
from nemotron_elastic.checkpoint.gguf import from_hf_model, load_hf_gguf, packaged_smollm2_gguf
from nemotron_elastic.io import load_tokenizer, resolve_checkpoint

pytest.importorskip("accelerate", reason="transformers needs accelerate to read GGUF files")


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_tiny_gguf_file_and_folder_load_like_transformers(tied, tmp_path):
    hf = tiny_llama(tie_word_embeddings=tied)
    path = write_tiny_gguf(hf, tmp_path / "tiny.gguf")
    assert resolve_checkpoint(tmp_path) == ("gguf", path)
    reference = AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file=path.name, dtype=torch.float32
    ).eval()
    x = torch.randint(0, 96, (2, 15))
    for source in (path, tmp_path):  # the file itself, and a folder holding exactly one .gguf
        model = load_model(source)
        assert model.config.tie_word_embeddings == tied and model.config.num_layers == 6
        with torch.no_grad():
            assert_close(model(x), reference(x).logits, what=f"tiny GGUF via {source.name}")
            # the GGUF round trip through llama.cpp's Q/K layout is lossless for F32 tensors
            assert_close(model(x), hf(x).logits, what="tiny GGUF vs the model it was written from")


def test_folder_with_two_gguf_files_is_ambiguous(tmp_path):
    hf = tiny_llama()
    write_tiny_gguf(hf, tmp_path / "a.gguf")
    write_tiny_gguf(hf, tmp_path / "b.gguf")
    with pytest.raises(ValueError, match="several .gguf") as err:
        load_model(tmp_path)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def smollm2():
    try:
        path = packaged_smollm2_gguf()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return path, load_hf_gguf(path)


@pytest.mark.slow  # transformers parses the GGUF metadata in pure Python: ~25 s per read of the 98 MB file
def test_packaged_smollm2_gguf_matches_transformers(smollm2):
    path, hf = smollm2
    config, tensors = from_hf_model(hf, str(path))  # the conversion read_gguf applies after loading
    assert config.family == "llama" and config.num_layers == 60 and config.pattern == "*-" * 30
    assert (config.hidden_size, config.num_attention_heads, config.num_key_value_heads) == (576, 9, 3)
    assert config.vocab_size == 49152 and config.tie_word_embeddings and config.head_dim == 64
    assert config.rope_theta == 100000.0
    from nemotron_elastic.checkpoint import build_model

    model = build_model(config, tensors)
    tok = load_tokenizer(path)
    ids = tok("The quick brown fox jumps over the lazy dog.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert_close(model(ids), hf(ids).logits, atol=1e-4, what="SmolLM2-135M GGUF")


@pytest.mark.slow
def test_packaged_smollm2_loads_end_to_end(smollm2, tmp_path):
    path, hf = smollm2
    model = load_model(path)
    ids = torch.tensor([[1, 504, 2365, 6354, 16438, 28]])
    with torch.no_grad():
        assert_close(model(ids), hf(ids).logits, atol=1e-4, what="SmolLM2 load_model")
