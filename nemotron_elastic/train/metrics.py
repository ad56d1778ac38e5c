# SPDX-License-Identifier: Apache-2.0
"""Metrics: one JSON line per log event in `<out>/metrics.jsonl`, and TensorBoard scalars when the
`tensorboard` package is installed (`pip install tensorboard`; optional, never required)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}/{k}" if prefix else str(k), v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)


class MetricsWriter:
    def __init__(self, out: Path, tensorboard: bool = True):
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "metrics.jsonl"
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:  # tensorboard not installed: JSONL only
                self._tb = None

    def write(self, step: int, split: str, values: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "split": split, **values}) + "\n")
        if self._tb is not None:
            flat: dict[str, float] = {}
            _flatten(split, values, flat)
            for k, v in flat.items():
                self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All rows of a metrics.jsonl (a missing file gives [])."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
