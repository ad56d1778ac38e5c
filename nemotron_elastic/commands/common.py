# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by the command modules: argument types, output-folder checks, tokenizer helpers,
atomic JSON, autocast, one-line model descriptions."""

from __future__ import annotations

import argparse
import json
import os
import secrets
from pathlib import Path
from typing import Any

from ..argtypes import DTYPES, positive_int  # noqa: F401  (re-exported for the command modules)

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


def check_out(out: Path, overwrite: bool) -> None:
    """Fail before slow work when `out` would be refused at save time (the save itself is atomic)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: folder exists and is not empty (pass --overwrite to replace it)")


def require_tokenizer(path: str | Path) -> Any:
    from ..checkpoint import load_tokenizer

    tokenizer = load_tokenizer(path)
    if tokenizer is None:
        raise ValueError(f"{path}: the checkpoint has no tokenizer (import it from a folder that has one)")
    return tokenizer


def encode(tokenizer: Any, text: str) -> Any:
    """Text -> (N,) long tensor; `verbose=False` silences the 'longer than model_max_length' warning."""
    import torch

    return torch.tensor(tokenizer(text, verbose=False)["input_ids"], dtype=torch.long)


def write_json(path: Path, data: dict) -> None:
    """Write `data` as JSON atomically: a temporary file in the same folder, then `os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
