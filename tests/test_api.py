# SPDX-License-Identifier: Apache-2.0
"""The small public API: load_model on native and HF folders, logits shape, sub-models."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import nemotron_elastic
from nemotron_elastic.checkpoint.load import load_model
from nemotron_elastic.checkpoint.native import save_native
from nemotron_elastic.config.model import ModelConfig
from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.model.hybrid import HybridLM
from nemotron_elastic.subnet.slicing import slice_model


def test_public_api(tmp_path):
    hf = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=48)).eval()
    hf.save_pretrained(tmp_path / "hf")
    model = load_model(tmp_path / "hf")
    assert isinstance(model, HybridLM) and isinstance(model.config, ModelConfig)
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        logits = model(ids)
        assert logits.shape == (2, 7, 64)
        assert torch.allclose(logits, hf(ids).logits, atol=1e-4)
    save_native(model, tmp_path / "native")
    again = load_model(tmp_path / "native")
    spec = SubnetSpec.from_dict({"hidden": 16, "mlp": 24}, again.config)
    with torch.no_grad():
        assert torch.allclose(again(ids, subnet=spec), slice_model(again, spec)(ids), atol=1e-5)
    assert "load_model" in nemotron_elastic.__all__
