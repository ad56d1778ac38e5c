# SPDX-License-Identifier: Apache-2.0
"""Resumable training state: sharded, atomic, independent of the world size, read without unpickling.

A checkpoint is a folder `checkpoints/step-<7-digit step>/`, e.g. `checkpoints/step-0000050/`:

    rank-00000.safetensors  the rows of every tensor that rank 0 holds: its FSDP shards (dim-0 rows) and the
    rank-00001.safetensors  whole replicated tensors; each file's metadata maps a tensor to its first row
    ...                     (`rows`). Tensors are named `model/<name>`, `router/<name>` and
                            `optim/<model.|router.><name>/<AdamW state key>`.
    rng.safetensors         torch CPU RNG state and the Gumbel generator state
    state.json              step, world size, optimizer param groups, data positions, the metrics window,
                            the trainer's own state (e.g. budget draws per stage), and every tensor's
                            shape and dtype (`tensors`)

Every rank writes its own rows (only one replica of each: replicated tensors come from rank 0, HSDP shards
from the first replica group), so no rank gathers the model or the optimizer state. On resume every rank
reads just the rows it holds now, from whichever files hold them: a run saved by 2 processes resumes on 1
or on 4, under ddp or fsdp.

The folder is built under a temporary name and renamed into place by rank 0 once every rank has written
(a barrier), so a run killed mid-write leaves the previous checkpoint intact; `latest_checkpoint` only
ever sees finished folders. Old checkpoints beyond `keep` are removed after a new one is in place. The
files may be written in the background while training goes on (`CheckpointWriter`, `save_async`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch.distributed.tensor import DTensor

from ..checkpoint.load import shard_rows
from ..checkpoint.stream import write_tensors
from ..io import read_safetensors, replace_dir
from .distributed import Distributed

PREFIX = "step-"
FORMAT = "nemotron-elastic-sharded-state-v2"


def named_state(model: torch.nn.Module, router: torch.nn.Module,
                optimizer: torch.optim.Optimizer) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of the training state with its checkpoint name (model, router, AdamW state)."""
    for prefix, module in (("model", model), ("router", router)):
        for name, param in module.named_parameters():  # a tied lm_head is listed once
            yield f"{prefix}/{name}", param
    for pname, param in _named_params(model, router):
        for key, value in optimizer.state.get(param, {}).items():
            if torch.is_tensor(value):
                yield f"optim/{pname}/{key}", value


def _named_params(model: torch.nn.Module, router: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(f"{prefix}.{n}", p) for prefix, m in (("model", model), ("router", router))
            for n, p in m.named_parameters()]


def _rows(tensor: torch.Tensor, rank: int) -> tuple[torch.Tensor, int, bool]:
    """(this rank's part, its first row, whether this rank writes it): one replica writes each row."""
    if isinstance(tensor, DTensor):
        start, _ = shard_rows(tensor)
        mesh = tensor.device_mesh
        first_replica = all(mesh.get_local_rank(d) == 0 for d, p in enumerate(tensor.placements) if p.is_replicate())
        return tensor.to_local(), start, first_replica
    return tensor, 0, rank == 0


class CheckpointWriter:
    """Writes the run's checkpoints, every rank its own rows (call every method on every rank).

    With `background`, `save` copies this rank's rows to host memory and a thread writes its file while
    training goes on; the checkpoint is published (every rank done, then rank 0 writes state.json and
    renames the folder into place) by the next `finish()`, which the loop calls after the next optimizer step
    and before the run ends or stops. Until then the previous checkpoint is the latest one, so a kill at any
    moment leaves a usable checkpoint.
    """

    def __init__(self, run_dir: Path, dist: Distributed, background: bool, keep: int = 2):
        self.run_dir, self.dist, self.background, self.keep = run_dir, dist, background, keep
        self._pending: tuple[threading.Thread | None, dict[str, Any]] | None = None

    def save(self, step: int, model: torch.nn.Module, router: torch.nn.Module, optimizer: torch.optim.Optimizer,
             generator: torch.Generator, extra: dict[str, Any]) -> None:
        """Start checkpoint `step` (written and published at once unless `background`)."""
        self.finish()
        folder = self.run_dir / "checkpoints" / f"{PREFIX}{step:07d}"

        def start() -> str:
            remove_partial_checkpoints(self.run_dir)
            tmp = folder.parent / f".{folder.name}.tmp-{secrets.token_hex(4)}"
            tmp.mkdir(parents=True)
            return str(tmp)

        tmp = Path(self.dist.on_main(start))  # every rank writes into the same fresh folder
        pieces, rows, layout = {}, {}, {}
        for name, tensor in named_state(model, router, optimizer):
            local, first, writes = _rows(tensor, self.dist.rank)
            layout[name] = {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch.")}
            if writes and (local.dim() == 0 or local.shape[0] > 0):
                pieces[name] = local.detach().to("cpu", copy=True).contiguous()  # training changes the original
                rows[name] = first
        # what state.json and rng.safetensors record is taken now, not when the files are published
        job = {"step": step, "folder": folder, "tmp": tmp, "error": None, "layout": layout,
               "extra": json.loads(json.dumps(extra)),  # a copy: the loop goes on appending to the window
               "groups": json.loads(json.dumps(optimizer.state_dict()["param_groups"])),
               "rng": {"torch": torch.get_rng_state(), "gumbel": generator.get_state()}}

        def write() -> None:
            try:
                # streamed: safetensors' save_file would first copy this rank's whole state into one buffer
                write_tensors(tmp / f"rank-{self.dist.rank:05d}.safetensors", pieces, {"rows": json.dumps(rows)})
            except BaseException as e:  # noqa: BLE001 -- raised by finish(), after every rank reached the commit
                job["error"] = e

        thread = threading.Thread(target=write, name=f"checkpoint-{step}", daemon=True) if self.background else None
        if thread is None:
            write()
        else:
            thread.start()
        self._pending = (thread, job)
        if thread is None:
            self.finish()

    def finish(self) -> Path | None:
        """Publish the checkpoint being written, if any (waits for this rank's file); returns its folder."""
        if self._pending is None:
            return None
        thread, job = self._pending
        self._pending = None
        if thread is not None:
            thread.join()
        self.dist.barrier()  # a rank that failed still lets the others reach the commit, which then refuses
        tmp, folder = job["tmp"], job["folder"]

        def commit() -> str:
            try:
                if job["error"] is not None:
                    raise job["error"]
                written = sorted(tmp.glob("rank-*.safetensors"))
                if len(written) != self.dist.world_size:
                    raise RuntimeError(f"checkpoint {job['step']}: {len(written)} of {self.dist.world_size} "
                                       "ranks wrote their rows")
                write_tensors(tmp / "rng.safetensors", job["rng"])
                state = {"format": FORMAT, "step": job["step"], "world_size": self.dist.world_size,
                         "param_groups": job["groups"], "tensors": job["layout"], **job["extra"]}
                (tmp / "state.json").write_text(json.dumps(state, indent=2))
                _sync_folder(tmp)
                replace_dir(tmp, folder)
                for stale in sorted(folder.parent.glob(f"{PREFIX}*"))[:-self.keep]:
                    shutil.rmtree(stale, ignore_errors=True)
                return str(folder)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
                raise

        done = Path(self.dist.on_main(commit))
        if job["error"] is not None:
            raise job["error"]
        return done


def _sync_folder(folder: Path) -> None:
    """fsync every file of `folder`: the rename that publishes it must not outrun its contents."""
    for path in folder.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Pieces:
    """Where every tensor's rows are in a checkpoint's rank files: {name: [(file, first row, rows)]}."""

    def __init__(self, folder: Path):
        self.index: dict[str, list[tuple[Path, int, int]]] = {}
        for path in sorted(folder.glob("rank-*.safetensors")):
            try:
                with safe_open(str(path), framework="pt", device="cpu") as f:
                    rows = json.loads((f.metadata() or {}).get("rows", "{}"))
                    for key in f.keys():  # noqa: SIM118 -- a safetensors handle, not a dict
                        shape = f.get_slice(key).get_shape()
                        self.index.setdefault(key, []).append((path, int(rows[key]), shape[0] if shape else 1))
            except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}: not a readable checkpoint shard ({' '.join(str(e).split())})") from None

    def read(self, name: str, start: int, stop: int, scalar: bool) -> torch.Tensor:
        """Rows [start, stop) of tensor `name` (the whole of a 0-dim one), from every file that holds part."""
        parts, covered = [], start
        for path, first, count in sorted(self.index.get(name, []), key=lambda p: p[1]):
            lo, hi = max(covered, first), min(stop, first + count)
            if hi <= lo and not scalar:
                continue
            with safe_open(str(path), framework="pt", device="cpu") as f:
                parts.append(f.get_tensor(name) if scalar else f.get_slice(name)[lo - first : hi - first])
            if scalar:
                return parts[0]
            covered = hi
        if scalar or covered < stop:
            raise ValueError(f"checkpoint: rows {covered}..{stop} of {name} are in no rank file (incomplete)")
        return torch.cat(parts) if parts else torch.empty(0)


def load_checkpoint(folder: Path, model: torch.nn.Module, router: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, generator: torch.Generator) -> dict[str, Any]:
    """Restore a checkpoint into this rank's model, router and optimizer (each reads only the rows it holds);
    returns state.json. Works for any world size and strategy at save and load."""
    state = json.loads((folder / "state.json").read_text())
    if state.get("format") != FORMAT:
        raise ValueError(f"{folder}: not a checkpoint of this version ({state.get('format')!r}); "
                         "start the run again or resume it with the version that wrote it")
    pieces, layout = _Pieces(folder), state["tensors"]
    expected = {n for n in layout if not n.startswith("optim/")}
    actual = {n for n, _ in named_state(model, router, optimizer)}
    if expected != actual:
        raise ValueError(f"{folder}: checkpoint does not match the model (missing {sorted(actual - expected)[:5]}, "
                         f"unexpected {sorted(expected - actual)[:5]})")

    def fill(name: str, like: torch.Tensor) -> torch.Tensor:
        """This rank's part of tensor `name`, shaped like `like` (a DTensor's local rows, or whole)."""
        if list(like.shape) != layout[name]["shape"]:
            raise ValueError(f"{folder}: {name} has shape {layout[name]['shape']}, the model {list(like.shape)}")
        local = like.to_local() if isinstance(like, DTensor) else like
        start, stop = shard_rows(like) if isinstance(like, DTensor) else (0, like.shape[0] if like.dim() else 0)
        return pieces.read(name, start, stop, like.dim() == 0).to(local.dtype).view(local.shape)

    with torch.no_grad():
        for name, param in named_state(model, router, optimizer):
            local = param.to_local() if isinstance(param, DTensor) else param
            local.copy_(fill(name, param))
    opt_state, names = {}, {id(p): n for n, p in _named_params(model, router)}
    ordered = [p for group in optimizer.param_groups for p in group["params"]]  # the optimizer's own indices
    for index, param in enumerate(ordered):
        pname = names[id(param)]
        keys = [n.rsplit("/", 1)[1] for n in layout if n.startswith(f"optim/{pname}/")]
        entry = {}
        for key in keys:
            name, scalar = f"optim/{pname}/{key}", layout[f"optim/{pname}/{key}"]["shape"] == []
            if scalar:  # AdamW's step counter (float32, kept where the optimizer keeps it: on the CPU)
                entry[key] = pieces.read(name, 0, 0, True).to(getattr(torch, layout[name]["dtype"]))
                continue
            local = fill(name, param).to(param.device)
            entry[key] = (DTensor.from_local(local, param.device_mesh, param.placements, shape=param.shape,
                                             stride=param.stride()) if isinstance(param, DTensor) else local)
        if entry:
            opt_state[index] = entry
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    rng = read_safetensors(folder / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    generator.set_state(rng["gumbel"])
    return state


def read_full(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint, whole (for inspection and tests; a model's whole state in memory)."""
    state = json.loads((folder / "state.json").read_text())
    pieces = _Pieces(folder)
    out = {}
    for name, info in state["tensors"].items():
        scalar = info["shape"] == []
        out[name] = pieces.read(name, 0, 0 if scalar else info["shape"][0], scalar).view(info["shape"])
    return out


def remove_partial_checkpoints(run_dir: Path) -> list[Path]:
    """Remove what a process killed while writing a checkpoint left behind: the hidden `.step-*.tmp-*` (and
    `.step-*.old-*`) folders. Returns the folders removed."""
    stale = sorted((run_dir / "checkpoints").glob(f".{PREFIX}*"))
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest finished checkpoint folder of a run, or None."""
    folders = sorted(p for p in (run_dir / "checkpoints").glob(f"{PREFIX}*") if (p / "state.json").is_file())
    return folders[-1] if folders else None
