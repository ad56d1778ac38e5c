# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by the command modules: argument types, the `--device` / `--dtype` pair, tokenizer
helpers, autocast, one-line model descriptions.

Nothing here imports torch at module level: the command modules import this one, and `--help` must stay
instant. The helpers that need torch import it when called.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from ..config.types import DTYPES, positive_int
from ..io import load_tokenizer

DEVICE_HELP = "cpu, cuda or cuda:N (default: cuda when a CUDA device is available, else cpu)"
DTYPE_HELP = "parameter dtype (default: bfloat16 on CUDA; on CPU as stored)"

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


def autocast(enabled: bool, device: Any = "cpu") -> Any:
    """bf16 autocast on `device`'s type (a no-op context when not enabled)."""
    import torch

    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=enabled)


# --- device and dtype ------------------------------------------------------------------------------------


def add_device_args(p: argparse.ArgumentParser, dtype_help: str = DTYPE_HELP) -> None:
    """`--device` and `--dtype`; both default to None, resolved by `resolve_device` when the command runs."""
    p.add_argument("--device", metavar="DEVICE", help=DEVICE_HELP)
    p.add_argument("--dtype", choices=DTYPES, help=dtype_help)


def check_device(text: str | None) -> Any:
    """'cpu' / 'cuda' / 'cuda:N' / None (the default) -> a torch.device that exists on this machine.

    Raises:
        ValueError: any other string, CUDA asked for where there is none, or an index past the last device.
    """
    import torch

    if text is None:
        text = "cuda" if torch.cuda.is_available() else "cpu"
    match = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", text)
    if match is None or (match[1] == "cpu" and match[2] is not None):
        raise ValueError(f"--device {text}: expected cpu, cuda or cuda:N")
    if match[1] == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(
            f"--device {text}: no CUDA device is available on this machine (torch.cuda.is_available() is False)"
        )
    count = torch.cuda.device_count()
    index = int(match[2]) if match[2] is not None else torch.cuda.current_device()
    if index >= count:
        raise ValueError(f"--device {text}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", index)


def resolve_device(args: argparse.Namespace) -> tuple[Any, Any]:
    """(torch.device, torch.dtype | None) of a command's `--device` / `--dtype`.

    Called first in every command that has them, so that a device this machine lacks is refused before
    anything is read. The dtype defaults to bfloat16 on CUDA; on the CPU to None (the command's own default:
    as stored, or float32 where it always computed in float32), which keeps the CPU behaviour unchanged.
    """
    import torch

    device = check_device(args.device)
    if args.dtype is not None:
        return device, getattr(torch, args.dtype)
    return device, (torch.bfloat16 if device.type == "cuda" else None)


def add_window_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seq-len", type=positive_int, default=512, metavar="L", help="window length (default 512)"
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=4, metavar="B", help="windows per forward (default 4)"
    )
