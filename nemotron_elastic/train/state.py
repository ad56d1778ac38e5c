# SPDX-License-Identifier: Apache-2.0
"""Resumable training state, written atomically and read without unpickling.

A checkpoint is a folder `checkpoints/step-XXXXXXX/`:

    model.safetensors      the student's weights (native names)
    router.safetensors     the router's weights
    optimizer.safetensors  every optimizer state tensor, keyed `state.<param index>.<name>`
    rng.safetensors        torch CPU RNG state and the Gumbel generator state
    state.json             step, optimizer param_groups, data positions, config fingerprint

It is built under a temporary name and renamed into place, so a run killed mid-write leaves the previous
checkpoint intact; `latest_checkpoint` only ever sees finished folders. Old checkpoints beyond `keep` are
removed after a new one is in place.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..checkpoint import atomic_output_dir

PREFIX = "step-"


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in tensors.items()}


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON-able param groups."""
    sd = optimizer.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            tensors[f"state.{idx}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, sd["param_groups"]


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    router: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    extra: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint `step` atomically; returns its folder."""
    folder = run_dir / "checkpoints" / f"{PREFIX}{step:07d}"
    opt_tensors, groups = optimizer_tensors(optimizer)
    from ..checkpoint import native_state_dict

    with atomic_output_dir(folder, overwrite=True) as tmp:
        save_file(_contiguous(native_state_dict(model)), str(tmp / "model.safetensors"))
        save_file(_contiguous(router.state_dict()), str(tmp / "router.safetensors"))
        save_file(_contiguous(opt_tensors), str(tmp / "optimizer.safetensors"))
        save_file({"torch": torch.get_rng_state(), "gumbel": generator.get_state()}, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"step": step, "param_groups": groups, **extra}, indent=2))
    for old in sorted((run_dir / "checkpoints").glob(f"{PREFIX}*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest finished checkpoint folder of a run, or None."""
    folders = sorted(p for p in (run_dir / "checkpoints").glob(f"{PREFIX}*") if (p / "state.json").is_file())
    return folders[-1] if folders else None


def load_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    router: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> dict[str, Any]:
    """Restore everything saved by `save_checkpoint`; returns state.json."""
    state = json.loads((folder / "state.json").read_text())
    weights = load_file(str(folder / "model.safetensors"))
    if getattr(model.config, "tie_word_embeddings", False):
        weights["lm_head.weight"] = weights["embeddings.weight"]
    with torch.no_grad():
        missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise ValueError(f"{folder}: checkpoint does not match the model (missing {missing}, unexpected {unexpected})")
    model.tie_weights()
    router.load_state_dict(load_file(str(folder / "router.safetensors")))
    load_optimizer(optimizer, load_file(str(folder / "optimizer.safetensors")), state["param_groups"])
    rng = load_file(str(folder / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    generator.set_state(rng["gumbel"])
    return state
