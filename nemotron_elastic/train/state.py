# SPDX-License-Identifier: Apache-2.0
"""Resumable training state, written atomically and read without unpickling.

A checkpoint is a folder `checkpoints/step-<7-digit step>/`, e.g. `checkpoints/step-0000050/`:

    model.safetensors      the student's weights (native names)
    router.safetensors     the router's weights
    optimizer.safetensors  every optimizer state tensor, keyed `state.<param index>.<name>`
    rng.safetensors        torch CPU RNG state and the Gumbel generator state
    state.json             step, optimizer param_groups, data positions, config fingerprint

It is built under a temporary name and renamed into place, so a run killed mid-write leaves the previous
checkpoint intact; `latest_checkpoint` only ever sees finished folders. Old checkpoints beyond `keep` are
removed after a new one is in place.

Multi-process runs write the same files, so a checkpoint does not depend on the world size or strategy:
rank 0 writes (replicas are identical); under FSDP every rank first takes part in gathering the full
model and optimizer state (`torch.distributed.checkpoint.state_dict`, full and CPU-offloaded to rank 0),
and on resume every rank reads the full files and keeps its own shards.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..checkpoint.native import native_state_dict
from ..io import atomic_output_dir
from .distributed import is_main

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


def checkpoint_tensors(
    model: torch.nn.Module, router: torch.nn.Module, optimizer: torch.optim.Optimizer, sharded: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[dict]]:
    """(model weights, optimizer tensors, optimizer param groups) to write, on rank 0 (empty elsewhere).

    With `sharded` (FSDP) the full state is gathered: a collective, so every rank calls it.
    """
    if sharded:
        return gather_model(model), *gather_optimizer(model, router, optimizer)
    if not is_main():
        return {}, {}, []
    return native_state_dict(model), *optimizer_tensors(optimizer)


def write_checkpoint(
    run_dir: Path,
    step: int,
    weights: dict[str, torch.Tensor],
    router: torch.nn.Module,
    opt_tensors: dict[str, torch.Tensor],
    groups: list[dict],
    generator: torch.Generator,
    extra: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint `step` atomically from `checkpoint_tensors`' output (rank 0 only); its folder."""
    folder = run_dir / "checkpoints" / f"{PREFIX}{step:07d}"
    remove_partial_checkpoints(run_dir)
    with atomic_output_dir(folder, overwrite=True) as tmp:
        save_file(_contiguous(weights), str(tmp / "model.safetensors"))
        save_file(_contiguous(router.state_dict()), str(tmp / "router.safetensors"))
        save_file(_contiguous(opt_tensors), str(tmp / "optimizer.safetensors"))
        save_file({"torch": torch.get_rng_state(), "gumbel": generator.get_state()}, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"step": step, "param_groups": groups, **extra}, indent=2))
    for old in sorted((run_dir / "checkpoints").glob(f"{PREFIX}*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    router: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    extra: dict[str, Any],
    keep: int = 2,
    sharded: bool = False,
) -> Path | None:
    """Write checkpoint `step` atomically; returns its folder (None on ranks other than 0).
    Call it on every rank when `sharded`."""
    weights, opt_tensors, groups = checkpoint_tensors(model, router, optimizer, sharded)
    if not is_main():
        return None
    return write_checkpoint(run_dir, step, weights, router, opt_tensors, groups, generator, extra, keep)


def remove_partial_checkpoints(run_dir: Path) -> list[Path]:
    """Remove what a process killed while writing a checkpoint left behind: the hidden `.step-*.tmp-*` (and
    `.step-*.old-*`) folders of `io.atomic_output_dir`. Returns the folders removed."""
    stale = sorted((run_dir / "checkpoints").glob(f".{PREFIX}*"))
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale


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
    sharded: bool = False,
) -> dict[str, Any]:
    """Restore everything saved by `save_checkpoint` (every rank reads the files); returns state.json.

    With `sharded` (FSDP) each rank keeps its shards of the full tensors.
    """
    state = json.loads((folder / "state.json").read_text())
    weights = load_file(str(folder / "model.safetensors"))
    if getattr(model.config, "tie_word_embeddings", False):
        weights["lm_head.weight"] = weights["embeddings.weight"]
    if sharded:
        missing, unexpected = scatter_model(model, weights)
    else:
        with torch.no_grad():
            missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise ValueError(f"{folder}: checkpoint does not match the model (missing {missing}, unexpected {unexpected})")
    if not sharded:  # FSDP2 copies into the existing (already tied) parameters
        model.tie_weights()
    router.load_state_dict(load_file(str(folder / "router.safetensors")))
    opt_tensors = load_file(str(folder / "optimizer.safetensors"))
    if sharded:
        scatter_optimizer(model, router, optimizer, opt_tensors, state["param_groups"])
    else:
        load_optimizer(optimizer, opt_tensors, state["param_groups"])
    rng = load_file(str(folder / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    generator.set_state(rng["gumbel"])
    return state


# --- FSDP: full state on rank 0 <-> shards on every rank ------------------------------------------------


def _full_options(**kw: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def gather_model(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The FSDP model's full weights on CPU, as `native_state_dict` names them; rank 0 only (the other
    ranks get {}). A collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    full = get_model_state_dict(model, options=_full_options(cpu_offload=True))
    if model.config.tie_word_embeddings:
        full.pop("lm_head.weight", None)
    return full


def scatter_model(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load full `weights` (present on every rank) into the FSDP model's shards; (missing, unexpected)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    result = set_model_state_dict(model, weights, options=_full_options(strict=False))
    return list(result.missing_keys), list(result.unexpected_keys)


def _container(model: torch.nn.Module, router: torch.nn.Module) -> torch.nn.Module:
    """One module owning every optimized parameter, so each has a name (`model.*`, `router.*`)."""
    return torch.nn.ModuleDict({"model": model, "router": router})


def gather_optimizer(
    model: torch.nn.Module, router: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """`optimizer_tensors` of an optimizer over FSDP shards: the full state on rank 0 (empty elsewhere),
    keyed by parameter index exactly as a single process writes it. A collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    container = _container(model, router)
    sd = get_optimizer_state_dict(container, optimizer, options=_full_options(cpu_offload=True))
    if not is_main():
        return {}, []
    # The name-keyed full state back to the index keys of `Optimizer.state_dict()` (params numbered in
    # param-group order), so the file is the same whatever the world size or strategy.
    index = {name: i for i, name in enumerate(n for g in sd["param_groups"] for n in g["params"])}
    tensors = {}
    for name, values in sd["state"].items():
        for key, value in values.items():
            tensors[f"state.{index[name]}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in sd["param_groups"]]
    return tensors, groups


def scatter_optimizer(
    model: torch.nn.Module,
    router: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    groups: list[dict],
) -> None:
    """Load an index-keyed full optimizer state (`optimizer_tensors` layout) into an optimizer over
    FSDP shards; every rank passes the full tensors."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    container = _container(model, router)
    names = {id(p): n for n, p in container.named_parameters()}
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(order[int(idx)], {})[name] = value
    named_groups = [{**g, "params": [order[i] for i in g["params"]]} for g in groups]
    set_optimizer_state_dict(container, optimizer, {"state": state, "param_groups": named_groups},
                             options=_full_options())
