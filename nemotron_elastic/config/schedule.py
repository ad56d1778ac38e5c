# SPDX-License-Identifier: Apache-2.0
"""How a run's steps are laid out: the curriculum stages (context, batch, budget weights), how each
stage's global batch splits into micro-steps and budget draws on a number of processes (also when a run
resumes on another number), the process layout (`dist`), and the LR schedule over the steps.
Part of the run configs (`config/run.py`, docs/DESIGN.md 3.8)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from .data import Blend
from .types import check_ranges


@dataclass(kw_only=True)
class StageConfig:
    """One curriculum stage: its own context, batch, length and budget weights (one per budget, in the
    order of `TrainConfig.budgets`; normalised).

    The batch is either `global_batch` (sequences per optimizer step over all processes; each rank then
    accumulates global_batch / (micro_batch x world size) micro-batches, so a run may resume on another
    number of processes) or `grad_accum` (micro-batches per rank and step: the global batch grows with the
    world size). `budget_draws`: budgets (and Gumbel samples) drawn per optimizer step with `global_batch`;
    each draw covers global_batch / budget_draws consecutive sequences. Default: one per micro-step at the
    world size the run starts on (kept on resume).
    """

    name: str = "stage1"
    steps: int = 100
    seq_len: int = 256
    micro_batch: int = 4
    grad_accum: int | None = None  # without global_batch: default 1
    global_batch: int | None = None
    budget_draws: int | None = None
    budget_weights: list[float] | None = None  # None: uniform
    # This stage's training data (a prepared source, raw data or a weighted blend: config/data.py) instead of
    # `data.train`, e.g. long reasoning traces at stage 2's longer context
    data: Blend | None = None

    def __post_init__(self) -> None:
        check_ranges(
            self, steps="[1, inf)", seq_len="[1, inf)", micro_batch="[1, inf)", grad_accum="[1, inf)",
            global_batch="[1, inf)", budget_draws="[1, inf)", budget_weights="[0, inf)",
        )
        if self.global_batch is not None and self.grad_accum is not None:
            raise ValueError("grad_accum: give global_batch or grad_accum, not both (with global_batch the "
                             "accumulation is derived from the world size)")
        if self.budget_draws is not None and self.global_batch is None:
            raise ValueError("budget_draws: needs global_batch (with grad_accum there is one draw per micro-step)")
        if self.global_batch is not None and self.global_batch % self.micro_batch:
            raise ValueError(f"global_batch: {self.global_batch} is not a multiple of micro_batch = {self.micro_batch}")
        if self.global_batch is not None and self.budget_draws is not None and self.global_batch % self.budget_draws:
            raise ValueError(f"budget_draws: {self.budget_draws} does not divide global_batch = {self.global_batch}")

    def accumulation(self, world_size: int, draws: int | None = None) -> tuple[int, int]:
        """(micro-steps per rank and optimizer step, budget draws per step) on `world_size` processes.

        draws: the run's budget draws per step when resuming (overrides `budget_draws` and the default).

        Raises:
            ValueError: the global batch does not split into micro-batches over the ranks, or a draw's
                sequences do not fill whole micro-steps.
        """
        if self.global_batch is None:
            accum = self.grad_accum or 1
            return accum, accum
        per_step = self.micro_batch * world_size
        if self.global_batch % per_step:
            raise ValueError(f"global_batch: {self.global_batch} is not divisible by micro_batch x world size = "
                             f"{self.micro_batch} x {world_size}")
        accum = self.global_batch // per_step
        draws = draws or self.budget_draws or accum
        if accum % draws:
            raise ValueError(f"budget_draws: a draw covers {self.global_batch // draws} sequences, not a multiple of "
                             f"micro_batch x world size = {per_step}; choose budget_draws dividing {accum}")
        return accum, draws


MAX_EPOCHS = 100


def accumulations(cfg: Any, world_size: int, draws: dict[str, int] | None = None) -> dict[str, tuple[int, int]]:
    """`StageConfig.accumulation` of every stage, by stage name; errors name the stage (`stages[1].global_batch`).

    draws: budget draws per stage name kept by a run being resumed."""
    out = {}
    for i, stage in enumerate(cfg.stages):
        try:
            out[stage.name] = stage.accumulation(world_size, (draws or {}).get(stage.name))
        except ValueError as e:
            raise ValueError(f"stages[{i}].{e}") from None
    return out


def stage_tokens(stage: StageConfig, micro_steps: int, world_size: int) -> int:
    """Training tokens one stage reads, with `micro_steps` per rank and optimizer step on `world_size` ranks."""
    return stage.steps * stage.micro_batch * stage.seq_len * micro_steps * world_size


def planned_tokens(cfg: Any, world_size: int = 1) -> int:
    """Training tokens a run reads over all its stages, on `world_size` processes."""
    accum = accumulations(cfg, world_size)
    return sum(stage_tokens(s, accum[s.name][0], world_size) for s in cfg.stages)


@dataclass(kw_only=True)
class DistConfig:
    """Data parallelism under torchrun (WORLD_SIZE > 1; docs/DESIGN.md 3.8). `dist: fsdp` is short for
    `dist: {strategy: fsdp}`."""

    strategy: Literal["ddp", "fsdp"] = "ddp"  # whole replicas, or FSDP2 shards
    # fsdp: shard within groups of this many ranks (a node) and replicate across groups (HSDP, a 2-D device
    # mesh); None: shard over every rank
    shard_size: int | None = None
    timeout_minutes: float = 30.0  # collective timeout: a rank that waits longer fails instead of hanging

    def __post_init__(self) -> None:
        check_ranges(self, shard_size="[1, inf)", timeout_minutes="(0, inf)")
        if self.shard_size is not None and self.strategy != "fsdp":
            raise ValueError("shard_size: only with strategy: fsdp")


def dist_config(value: Any) -> DistConfig:
    """`dist` as a section (its one-word form `fsdp` is `{strategy: fsdp}`)."""
    return DistConfig(strategy=value) if isinstance(value, str) else value


def resumed_accumulation(cfg: Any, saved_world: int, saved_draws: dict[str, int] | None,
                         world_size: int) -> dict[str, tuple[int, int]]:
    """(micro-steps per rank, budget draws) per stage for a run saved on `saved_world` processes with budget
    draws `saved_draws` (per stage name) and resumed on `world_size`: the draws re-split over the ranks.

    Raises:
        ValueError: a stage without `global_batch` resumed on another number of processes (its global batch
            and data order would silently change), or a draw that does not fill whole micro-steps.
    """
    for i, stage in enumerate(cfg.stages):
        if stage.global_batch is None and saved_world != world_size:
            raise ValueError(f"stages[{i}]: saved by {saved_world} processes, resumed by {world_size}; with "
                             "grad_accum the global batch depends on the number of processes; set "
                             "stages[].global_batch (sequences per step) to resume on another number")
    try:
        return accumulations(cfg, world_size, saved_draws)
    except ValueError as e:
        raise ValueError(f"{e} (resuming on {world_size} processes)") from None


def stage_at(cfg: Any, step: int) -> tuple[int, StageConfig]:
    """(index, stage) that global optimizer step `step` belongs to."""
    end = 0
    for i, stage in enumerate(cfg.stages):
        end += stage.steps
        if step < end:
            return i, stage
    return len(cfg.stages) - 1, cfg.stages[-1]


def lr_multiplier(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine down to `min_ratio` at `total` steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
