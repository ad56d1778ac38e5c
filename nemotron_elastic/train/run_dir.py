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
from ..io import write_text
from .state import latest_checkpoint, remove_partial_checkpoints

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
            # where the run's files and processes are may change on resume (checkpoints are independent of the
            # world size and strategy); what it trains may not
            diff = [d for d in _differences(to_dict(previous), to_dict(cfg))
                    if d not in ("out", "check_decisions") and not d.startswith("dist.")]
            if diff:
                raise ValueError(f"{out}: resume folder was trained with another config ({', '.join(diff[:5])} differ)")
            remove_partial_checkpoints(out)  # a run killed mid-save left them; nothing else would
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
    """Appends metric rows to `<out>/metrics.jsonl` (and TensorBoard). A resumed run first calls
    `resume_at(step)`: rows written after that step by the interrupted run are dropped, so every step is
    logged once."""

    def __init__(self, out: Path, tensorboard: bool = True):
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "metrics.jsonl"
        self._tb_dir = out / "tensorboard" if tensorboard else None
        self._tb: Any = None
        self._purge_step: int | None = None

    def resume_at(self, step: int) -> None:
        """Keep only the rows of steps <= `step` (the resumed checkpoint's); TensorBoard purges the rest."""
        rows = [row for row in read_metrics(self.path) if row.get("step", 0) <= step]
        if self.path.is_file():
            write_text(self.path, "".join(json.dumps(row) + "\n" for row in rows))
        self._purge_step = step + 1

    def _tensorboard(self) -> Any:
        if self._tb is None and self._tb_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional: `pip install tensorboard`
            except ImportError:  # tensorboard not installed: JSONL only
                self._tb_dir = None
                return None
            self._tb = SummaryWriter(str(self._tb_dir), purge_step=self._purge_step)
        return self._tb

    def write(self, step: int, split: str, values: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "split": split, **values}) + "\n")
        if self._tensorboard() is not None:
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
