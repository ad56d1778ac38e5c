# SPDX-License-Identifier: Apache-2.0
"""Shared by the eval tests: a micro elastic checkpoint assembled without training (seconds, deterministic).

The parent is the micro-hybrid preset with random weights and a byte-level BPE trained on a few default
corpus documents; budgets.json lists hand-picked nested specs for 1.0 / 0.75 / 0.5 and the router is
freshly initialised (it only matters for interpolated budgets). `tests/eval/test_lm_eval.py` also has a
slow variant on a checkpoint written by the real trainer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from nemotron_elastic.checkpoint import save_native
from nemotron_elastic.checkpoint.elastic import save_elastic
from nemotron_elastic.config.presets import get_preset
from nemotron_elastic.config.run import TrainConfig
from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.data.corpus import default_corpus
from nemotron_elastic.data.tokenizer import train_bpe
from nemotron_elastic.model import HybridLM
from nemotron_elastic.router import Router, build_menu

SPECS = {  # micro-hybrid: pattern M-*M-, hidden 32, MLP 64, 4 query / 2 KV heads, 8 Mamba heads in 2 groups
    1.0: {},
    0.75: {"hidden": 24, "mlp": 48, "mamba_heads": 6},
    0.5: {"hidden": 16, "mlp": 32, "mamba_heads": 4},
}
MENUS = {"hidden": [1.0, 0.75, 0.5], "mlp": [1.0, 0.75, 0.5], "mamba_heads": [1.0, 0.75, 0.5]}


def tokenizer():
    return train_bpe(default_corpus("train", sources=("wikipedia",))[:60], 300)


def make_parent(root: Path, seed: int = 0) -> HybridLM:
    """A micro hybrid parent with random weights, saved as a native checkpoint in root/parent."""
    tok = tokenizer()
    cfg = dataclasses.replace(get_preset("micro-hybrid"), vocab_size=len(tok))
    model = HybridLM(cfg)
    model.init_weights(torch.Generator().manual_seed(seed))
    save_native(model, root / "parent", tokenizer=tok)
    return model, tok


def make_elastic(root: Path, seed: int = 0) -> Path:
    """root/elastic: an elastic checkpoint with budgets 1.0 / 0.75 / 0.5 (SPECS)."""
    model, tok = make_parent(root, seed)
    cfg = model.config
    menus = [build_menu(cfg, axis, values) for axis, values in MENUS.items()]
    torch.manual_seed(seed)
    router = Router(menus, list(SPECS), hidden_dim=16)
    budgets = []
    for budget, data in SPECS.items():
        spec = SubnetSpec.from_dict(data, cfg)
        budgets.append(
            {
                "budget": budget,
                "spec": spec.to_dict(),
                "params": spec.param_count(),
                "param_ratio": spec.param_count() / cfg.num_parameters(),
            }
        )
    info = {"budget_kind": "params", "budgets": budgets}
    return save_elastic(root / "elastic", model, tok, router, info, TrainConfig(), None)
