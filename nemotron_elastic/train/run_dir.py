# SPDX-License-Identifier: Apache-2.0
"""The run folder: refuse to clobber, resume only the same config, start fresh on request."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..configio import load_yaml, save_yaml, to_dict
from .config import PretrainConfig, TrainConfig
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
