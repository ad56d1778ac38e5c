# SPDX-License-Identifier: Apache-2.0
"""Multi-process training under torchrun (docs/DESIGN.md 3.8): the process group, the two data-parallel
strategies, and the few collectives the training loop needs.

    torchrun --nproc_per_node=N -m nemotron_elastic train --config FILE [dist=fsdp] [dist.shard_size=8]

Without torchrun (no WORLD_SIZE, or WORLD_SIZE=1) nothing here creates a process group and every helper
returns at once, so single-process training is unchanged.

Strategies (`dist.strategy` in the run config, used only when WORLD_SIZE > 1):

    ddp   every rank holds the whole student and router; the gradients of the whole accumulation are
          averaged in one bucketed all-reduce after the last micro-step (what DistributedDataParallel
          does with `no_sync` on the other micro-steps). Done by hand rather than by the DDP wrapper
          because the loss uses the LM head *outside* the student's forward (`head_weight(masks)`) and a
          different sub-model per budget: DDP's per-parameter autograd hooks would count such
          parameters as unused (or as ready twice) and hang or fail.
    fsdp  FSDP2 (`fully_shard`) on every block, then on the root, for the student and for the frozen
          teacher. Parameters are DTensors sharded on dim 0 between forwards; inside a forward they are
          plain tensors again, so the elastic slices (`weight[:k]`, `index_select`) just work. The roots
          are sharded with reshard_after_forward=False, so the LM head stays unsharded from the end of
          the forward through the backward: `head_weight(masks)` and the KD loss (which recomputes its
          chunks in backward) read it there. Gradients are reduce-scattered at every micro-step (sharded
          gradients are what FSDP saves memory with); the frozen teacher's root is resharded by hand
          after each backward (`reshard`). The router stays a replicated plain module in both modes.
          The elastic trainer's student and teacher are built on the meta device, sharded, and filled
          with each rank's rows read from the parent's safetensors (`load_model`): no rank ever holds a
          whole model, in host or GPU memory. Mesh, HSDP and the bf16 policy: `fsdp.py`.

The process group is NCCL for CUDA tensors and gloo for CPU tensors ("cpu:gloo,cuda:nccl"), with
`dist.timeout_minutes` as the collective timeout.

References: PyTorch FSDP2 (`torch.distributed.fsdp.fully_shard`), torchtitan's `parallelize` (read, not
copied); NVIDIA Megatron-LM trains every rank on the same budget at a micro-step, as `step.sample_budget` does.
"""

from __future__ import annotations

import atexit
import builtins
import datetime
import json
import os
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from ..checkpoint.load import load_model, load_sharded
from ..config.schedule import DistConfig
from .fsdp import build_mesh, clip_mixed_grad_norm, float32_params, shard_model

T = TypeVar("T")
BUCKET_NUMEL = 1 << 25  # elements per all-reduce bucket (128 MB of fp32): bounds the extra grad copy


def _comm_device() -> torch.device:
    """Where small collective tensors live: the current GPU under a pure NCCL group, else CPU (gloo; the
    "cpu:gloo,cuda:nccl" group sends CPU tensors over gloo)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def is_main() -> bool:
    """True on rank 0, and in a single process."""
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_initialized():
        dist.barrier()


def check_same(what: str, value: str) -> None:
    """Raise on every rank when the ranks hold different `value`s (compared by a CRC32 hash).

    A debug check: ranks that pick different sub-models run different collectives under FSDP (a dropped
    layer skips its all-gather) and would hang instead of failing."""
    if not dist.is_initialized():
        return
    h = torch.tensor([zlib.crc32(value.encode())], dtype=torch.long, device=_comm_device())
    low, high = h.clone(), h.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if int(low) != int(high):
        raise RuntimeError(f"{what}: the ranks disagree (rank {dist.get_rank()} has {value})")


def all_reduce_window(window: dict[str, list[float]]) -> dict[str, list[float]]:
    """Element-wise mean over ranks of every metric list, in one collective.

    Every rank has the same keys and list lengths (same budgets at the same micro-steps, step.sample_budget),
    so the flattened vectors line up.
    """
    if not dist.is_initialized() or not window:
        return window
    keys = sorted(window)
    flat = torch.tensor([v for k in keys for v in window[k]], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(flat)
    values = (flat / dist.get_world_size()).tolist()
    out, start = {}, 0
    for k in keys:
        out[k] = values[start : start + len(window[k])]
        start += len(window[k])
    return out


def teardown() -> None:
    """Destroy the process group, if any (registered atexit by `setup`)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def _same_error(name: str, message: str) -> Exception:
    """An exception of built-in type `name` (RuntimeError naming it for any other type)."""
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except TypeError:  # a built-in that wants other arguments (e.g. UnicodeDecodeError)
            pass
    return RuntimeError(f"{name}: {message}")


def _buckets(tensors: list[torch.Tensor], cap: int) -> Iterable[list[torch.Tensor]]:
    """Consecutive runs of same-dtype tensors of at most `cap` elements (one tensor may exceed it)."""
    bucket: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        if bucket and (size + t.numel() > cap or t.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.numel()
    if bucket:
        yield bucket


@dataclass
class Distributed:
    """This process' place in the run. `enabled` is False in a single process, and then every method
    is a no-op (or the plain single-process operation)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    strategy: Literal["ddp", "fsdp"] = "ddp"
    bf16: bool = False  # fsdp: all-gather parameters in bfloat16 (MixedPrecisionPolicy), reduce in float32
    mesh: Any = None  # fsdp: the DeviceMesh (fsdp.build_mesh)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def fsdp(self) -> bool:
        return self.enabled and self.strategy == "fsdp"

    @property
    def hsdp(self) -> bool:
        """Sharded within groups of ranks and replicated across them (a 2-D mesh)."""
        return self.fsdp and self.mesh is not None and self.mesh.ndim == 2

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def init_device(self) -> torch.device:
        """Where to build or load the models: CPU under fsdp (`fully_shard` moves each rank's shards to
        its GPU, so no GPU ever holds a whole model), else `device`."""
        return torch.device("cpu") if self.fsdp else self.device

    def barrier(self) -> None:
        barrier()

    # --- running something once ---------------------------------------------------------------------
    def on_main(self, fn: Callable[[], T]) -> T:
        """Run `fn` on rank 0 only and give its (JSON-able) result to every rank.

        A failure on rank 0 is raised there as is, and on the other ranks as the same built-in exception
        type (e.g. FileExistsError, so the CLI prints its one clear line) or else a RuntimeError, so no
        rank is left waiting in a collective.
        """
        if not self.enabled:
            return fn()
        payload: dict = {}
        error: BaseException | None = None
        if self.is_main:
            try:
                payload = {"result": fn()}
            except BaseException as e:  # noqa: BLE001 -- re-raised below, once the other ranks know
                error, payload = e, {"error": type(e).__name__, "message": str(e)}
        payload = self._broadcast_json(payload)
        if error is not None:
            raise error
        if "error" in payload:
            raise _same_error(payload["error"], f"{payload['message']} (raised on rank 0)")
        return payload["result"]

    def main_first(self, fn: Callable[[], T]) -> T:
        """Run `fn` on rank 0, then on the other ranks (e.g. a cache that rank 0 fills and the others
        reuse, instead of every rank writing it at once). Returns `fn()` of this rank."""
        if not self.enabled:
            return fn()
        box: dict[str, T] = {}

        def first() -> None:
            box["value"] = fn()

        self.on_main(first)  # a failure on rank 0 is raised on every rank here
        return box["value"] if self.is_main else fn()

    def _broadcast_json(self, obj: dict) -> dict:
        """Rank 0's `obj` on every rank, sent as UTF-8 JSON (no pickles)."""
        device = _comm_device()
        data = json.dumps(obj).encode() if self.is_main else b""
        size = torch.tensor([len(data)], dtype=torch.long, device=device)
        dist.broadcast(size, 0)
        buf = torch.zeros(int(size), dtype=torch.uint8, device=device)
        if self.is_main:
            buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        dist.broadcast(buf, 0)
        return json.loads(buf.cpu().numpy().tobytes().decode())

    # --- models -------------------------------------------------------------------------------------
    def replicate(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank (ranks seed alike, but a mismatch here
        would silently train different models)."""
        if not self.enabled:
            return
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, 0)

    def load_model(self, path: Path, dtype: torch.dtype) -> nn.Module:
        """The native model at `path` for this rank: whole on `device`, or under fsdp built on the meta
        device, sharded, and filled with this rank's rows only (no rank ever holds the whole model)."""
        if not self.fsdp:
            return load_model(path, dtype=dtype, device=self.device)
        return load_sharded(path, dtype, self.device, self._shard)

    def wrap_trained(self, model: nn.Module) -> nn.Module:
        """Prepare the trained model before its optimizer is built: replicated (ddp) or sharded (fsdp; a
        model from `load_model` already is). Changed in place (FSDP2 keeps class, attributes and names)."""
        if self.fsdp and isinstance(model, FSDPModule):
            return model
        self.replicate(model)
        if self.fsdp:
            with torch.no_grad():  # fully_shard moves what it shards; the float32 rest goes by hand
                for p in float32_params(model):
                    p.data = p.data.to(self.device)
            self._shard(model)
        return model

    def wrap_frozen(self, model: nn.Module) -> nn.Module:
        """Shard a frozen model (the teacher) like the trained one under fsdp; ddp keeps it whole."""
        if self.fsdp and not isinstance(model, FSDPModule):
            self._shard(model)
        return model

    def _shard(self, model: nn.Module) -> None:
        shard_model(model, self.mesh, self.bf16)

    def all_reduce_on(self, model: nn.Module, last: bool) -> None:
        """HSDP: gradients are reduce-scattered within the shard group at every micro-step, but all-reduced
        across replicas only after the last micro-step of the accumulation window."""
        if self.hsdp:
            model.set_requires_all_reduce(last)

    def reshard(self, *modules: nn.Module) -> None:
        """Free the unsharded root parameters of FSDP modules (the teacher after each backward, every
        model after an evaluation); they are all-gathered again by the next forward."""
        if self.fsdp:
            for m in modules:
                m.reshard()

    # --- gradients ----------------------------------------------------------------------------------
    def sync_grads(self, params: list[nn.Parameter]) -> None:
        """Average the gradients of replicated (non-DTensor) parameters over ranks, after the last
        micro-step. FSDP-sharded parameters are already reduce-scattered by FSDP and are skipped.

        A parameter that no rank used keeps grad None (AdamW then skips it, as in a single process);
        one that some rank used gets zeros elsewhere, so every rank runs the same collectives and an
        unused parameter can never hang the run.
        """
        if not self.enabled:
            return
        plain = [p for p in params if not isinstance(p, DTensor)]
        if not plain:
            return
        used = torch.tensor([p.grad is not None for p in plain], dtype=torch.float32, device=plain[0].device)
        dist.all_reduce(used)
        live = [p for p, u in zip(plain, used.tolist()) if u > 0]
        for p in live:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        for bucket in _buckets([p.grad for p in live], BUCKET_NUMEL):
            flat = torch.cat([g.reshape(-1) for g in bucket])  # (sum of numels,): one collective per bucket
            dist.all_reduce(flat)  # gloo has no AVG: sum, then divide
            flat.div_(self.world_size)
            for grad, reduced in zip(bucket, flat.split([g.numel() for g in bucket])):
                grad.copy_(reduced.view_as(grad))

    def clip_grad_norm(self, params: list[nn.Parameter], max_norm: float) -> float:
        """Clip the global gradient norm to `max_norm`; returns the norm before clipping."""
        if self.fsdp:  # DTensors and plain tensors mixed
            return clip_mixed_grad_norm(params, max_norm)
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))


def setup(cfg: DistConfig | None = None, bf16: bool = False) -> Distributed:
    """This process' `Distributed`, initialising the process group under torchrun.

    Reads torchrun's RANK, WORLD_SIZE and LOCAL_RANK; the backend is NCCL for CUDA tensors and gloo for CPU
    ones. A second call (a second trainer in the same process) reuses the group.

    Raises:
        ValueError: `dist.shard_size` does not divide the world size (before anything is allocated).
    """
    cfg = cfg or DistConfig()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1:
        return Distributed(torch.device("cuda" if cuda else "cpu"), strategy=cfg.strategy, bf16=bf16)
    if cfg.shard_size is not None and world % cfg.shard_size:
        raise ValueError(f"dist.shard_size: {cfg.shard_size} does not divide the world size {world}")
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", device_id=device if cuda else None,
                                timeout=datetime.timedelta(minutes=cfg.timeout_minutes))
        atexit.register(teardown)
    if dist.get_world_size() != world or dist.get_rank() != rank:
        raise RuntimeError(f"process group is rank {dist.get_rank()} of {dist.get_world_size()}, "
                           f"torchrun says {rank} of {world}")
    mesh = build_mesh(device.type, world, cfg.shard_size) if cfg.strategy == "fsdp" else None
    return Distributed(device, rank, world, cfg.strategy, bf16, mesh)
