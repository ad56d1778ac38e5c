# SPDX-License-Identifier: Apache-2.0
"""Fixtures shared by test modules: a saved micro-hybrid parent (native folder with its tokenizer), the
parent the reproduction study and its follow-up studies run on in quick mode."""

import dataclasses
from pathlib import Path

import pytest
import torch

from nemotron_elastic.checkpoint import save_native
from nemotron_elastic.config.presets import get_preset
from nemotron_elastic.data.corpus import default_corpus
from nemotron_elastic.data.tokenizer import train_bpe
from nemotron_elastic.model import HybridLM


@pytest.fixture(scope="session")
def micro_parent(tmp_path_factory) -> Path:
    """A randomly initialised micro-hybrid parent (seed 0) with a 512-token BPE tokenizer; read-only for the
    tests (studies write into their own folders)."""
    root = tmp_path_factory.mktemp("micro-parent")
    tok = train_bpe(default_corpus("train")[:200], 512)
    cfg = dataclasses.replace(get_preset("micro-hybrid"), vocab_size=len(tok))
    torch.manual_seed(0)
    model = HybridLM(cfg)
    model.init_weights()
    save_native(model, root / "parent", tokenizer=tok)
    return root / "parent"
