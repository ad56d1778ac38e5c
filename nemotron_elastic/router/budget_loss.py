# SPDX-License-Identifier: Apache-2.0
"""The router's budget loss (docs/METHOD.md 7.3).

    cost  = C(expected sizes)                 parameters, or memory (weights + KV + SSM + conv state)
    diff  = | cost / (budget * C(parent)) - 1 |
    diff  = 0 inside a dead zone (5%) for budgets below 1: when both the expected cost and the cost of the
            decision actually taken (the argmax of the sampled probabilities) are within it. NVIDIA's code
            tests the expected cost only; then training stalls at the edge of the zone while the argmax
            sub-model, which is what gets exported, can sit outside it.
    full budget: diff += pull * sum_axes mean((p - onehot(largest))^2)   (keeps the full model full)

Budgets are fractions of the parent's cost of the same kind, so `memory` budgets read "0.5 of the parent's
inference memory at this context, batch and dtype".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config.model import ModelConfig
from ..subnet.cost import Sizes, memory_bytes, param_count
from .choices import expected_sizes
from .menus import AxisMenu


def cost_of(parent: ModelConfig, sizes, kind: str = "params", memory: dict | None = None) -> torch.Tensor:
    """Differentiable cost of `sizes`: 'params' (count) or 'memory' (bytes; `memory` = memory_bytes kwargs,
    e.g. {"context": 8192, "batch": 1, "weight_bytes": 2})."""
    if kind == "params":
        return param_count(parent, sizes)
    if kind == "memory":
        kwargs = dict(memory or {})
        if "context" not in kwargs:
            raise ValueError("budget memory: needs a `context` length")
        return memory_bytes(parent, sizes, **kwargs)["total"]
    raise ValueError(f"budget kind: expected 'params' or 'memory', got {kind!r}")


def budget_loss(
    parent: ModelConfig,
    menus: dict[str, AxisMenu],
    probs: dict[str, torch.Tensor],
    budget: float,
    kind: str = "params",
    memory: dict | None = None,
    dead_zone: float = 0.05,
    full_pull: float = 10.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (loss, cost_ratio) where cost_ratio = expected cost / parent cost (for logging)."""
    ref = next(iter(probs.values()))
    sizes = expected_sizes(parent, menus, {k: v.double() for k, v in probs.items()})
    full = cost_of(parent, Sizes.full(parent, dtype=torch.float64, device=ref.device), kind, memory)
    ratio = cost_of(parent, sizes, kind, memory) / full
    diff = (ratio / budget - 1.0).abs()
    if budget < 1.0:
        hard = {k: F.one_hot(v.argmax(-1), v.shape[-1]).double() for k, v in probs.items()}
        hard_ratio = cost_of(parent, expected_sizes(parent, menus, hard), kind, memory) / full
        inside = (diff < dead_zone) & ((hard_ratio / budget - 1.0).abs() < dead_zone)
        diff = torch.where(inside, torch.zeros_like(diff), diff)
    else:
        for axis, p in probs.items():
            target = F.one_hot(torch.zeros(p.shape[0], dtype=torch.long, device=p.device), p.shape[-1]).to(p.dtype)
            diff = diff + full_pull * (p - target).pow(2).mean()
    return diff.to(ref.dtype), ratio.detach().to(ref.dtype)
