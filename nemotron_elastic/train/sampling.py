# SPDX-License-Identifier: Apache-2.0
"""Budget sampling and schedules over the curriculum (SPEC 8.1-8.2).

One budget per micro-batch, drawn from the current stage's weights with a seed that depends on (run seed,
global step, micro-step) only, so every data-parallel rank trains the same budget at the same micro-step
(as NVIDIA's `get_grad_acc_based_random_choice`) and a resumed run draws the same budgets. Budgets mix
inside one optimizer step through gradient accumulation.
"""

from __future__ import annotations

import math
import random

from .config import StageConfig, TrainConfig


def stage_at(cfg: TrainConfig, step: int) -> tuple[int, StageConfig]:
    """(index, stage) that global optimizer step `step` belongs to."""
    end = 0
    for i, stage in enumerate(cfg.stages):
        end += stage.steps
        if step < end:
            return i, stage
    return len(cfg.stages) - 1, cfg.stages[-1]


def sample_budget(cfg: TrainConfig, stage: StageConfig, step: int, micro: int) -> float:
    """The budget of micro-batch `micro` of optimizer step `step`."""
    weights = stage.budget_weights or [1.0] * len(cfg.budgets)
    rng = random.Random(f"{cfg.seed}/{step}/{micro}")
    return rng.choices(cfg.budgets, weights=weights, k=1)[0]


def lr_multiplier(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine down to `min_ratio` at `total` steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
