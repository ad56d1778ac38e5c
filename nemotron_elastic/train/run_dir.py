# SPDX-License-Identifier: Apache-2.0
"""The run folder: refuse to clobber, resume only the same config, start fresh on request; and the run's
metrics log (`metrics.jsonl`, TensorBoard scalars)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..config.run import PretrainConfig, TrainConfig
from ..config.types import to_dict
from ..config.yaml_io import load_yaml, save_yaml
from .state import latest_checkpoint

CONFIG = "train_config.yaml"


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


def prepare_run_dir(out: Path, cfg: TrainConfig | PretrainConfig, resume: bool, overwrite: bool) -> Path | None:
    """Make `out` ready; returns the checkpoint to resume from (None: start at step 0).

    Raises (before any training): FileExistsError when `out` holds something else or a finished/other run
    and neither resume nor overwrite is asked; ValueError when resuming a run of another config.
    """
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    saved = out / CONFIG
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not saved.is_file():
            raise FileExistsError(f"{out}: folder exists and is not a training run (choose another --out)")
        if overwrite:
            shutil.rmtree(out)
        elif resume:
            previous = load_yaml(type(cfg), saved)
            diff = [d for d in _differences(to_dict(previous), to_dict(cfg)) if d not in ("out",)]
            if diff:
                raise ValueError(f"{out}: resume folder was trained with another config ({', '.join(diff[:5])} differ)")
            return latest_checkpoint(out)
        else:
            raise FileExistsError(f"{out}: a training run is already there (pass --resume to continue it or --overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, saved)
    return None


# --- metrics ---------------------------------------------------------------------------------------------
# One JSON line per log event in `<out>/metrics.jsonl`, and TensorBoard scalars when the
# `tensorboard` package is installed (`pip install tensorboard`; optional, never required).
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
