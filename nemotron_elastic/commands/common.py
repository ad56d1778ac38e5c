# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by the command modules: argument types, output-folder checks, tokenizer helpers,
atomic JSON, autocast, one-line model descriptions."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config.types import positive_int
from ..io import load_tokenizer

# --- helpers -----------------------------------------------------------------------------------------------


def compact_pattern(pattern: str) -> str:
    """'*-*-*-' -> '(*-)x3'; a pattern that is no repeated unit is returned as is."""
    for size in range(1, len(pattern) // 2 + 1):
        unit, count = pattern[:size], len(pattern) // size
        if len(pattern) % size == 0 and unit * count == pattern:
            return f"({unit})x{count}" if size > 1 else f"{unit}x{count}"
    return pattern


def describe(model: Any) -> str:
    """'llama, pattern (*-)x30, 134.5M params, float32' for summaries."""
    cfg = model.config
    num_params = sum(p.numel() for p in model.parameters())  # parameters() lists a tied head once
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return f"{cfg.family}, pattern {compact_pattern(cfg.pattern)}, {num_params / 1e6:.1f}M params, {dtype}"


def require_tokenizer(path: str | Path) -> Any:
    tokenizer = load_tokenizer(path)
    if tokenizer is None:
        raise ValueError(f"{path}: the checkpoint has no tokenizer (import it from a folder that has one)")
    return tokenizer


def encode(tokenizer: Any, text: str) -> Any:
    """Text -> (N,) long tensor; `verbose=False` silences the 'longer than model_max_length' warning."""
    import torch

    return torch.tensor(tokenizer(text, verbose=False)["input_ids"], dtype=torch.long)


def autocast(enabled: bool) -> Any:
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)



def add_window_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seq-len", type=positive_int, default=512, metavar="L", help="window length (default 512)"
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=4, metavar="B", help="windows per forward (default 4)"
    )
