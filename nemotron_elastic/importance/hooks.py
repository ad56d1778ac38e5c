# SPDX-License-Identifier: Apache-2.0
"""Forward hooks that accumulate per-unit activation statistics over calibration batches.

A statistic reduces an activation a (B, L, C) to one non-negative score per unit (C,), in two steps:

1. over the sequence: mean (default), sum or max of |a|, giving (B, C);
2. over the batch and across calibration batches: L2 (default: sqrt of the sum of squares), mean, sum or max.

The default, "sequence = mean, batch = L2", is Minitron's best aggregation (https://arxiv.org/abs/2407.14679,
Table 13) and what Model-Optimizer's `mcore_minitron` hooks compute (mean |a| over the sequence, squared and
summed over the batch, accumulated over batches, square root at the end). Statistics accumulate in float64,
so bf16 activations (autocast) do not lose small scores.

`collect(points)` registers one hook per point and always removes every hook on exit (also on error), so a
model leaves it exactly as it came in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

SequenceReduce = Literal["mean", "sum", "max"]
BatchReduce = Literal["l2", "mean", "sum", "max"]


@dataclass(frozen=True)
class Aggregation:
    """How |a| (B, L, C) becomes a score per unit (C,): `sequence` first, then `batch` (see module docstring)."""

    sequence: SequenceReduce = "mean"
    batch: BatchReduce = "l2"

    def __post_init__(self) -> None:
        if self.sequence not in ("mean", "sum", "max"):
            raise ValueError(f"aggregation.sequence: expected mean, sum or max, got {self.sequence!r}")
        if self.batch not in ("l2", "mean", "sum", "max"):
            raise ValueError(f"aggregation.batch: expected l2, mean, sum or max, got {self.batch!r}")

    def to_dict(self) -> dict[str, str]:
        return {"sequence": self.sequence, "batch": self.batch}


class RunningStat:
    """Accumulates one statistic over calibration batches; `value()` gives the score per unit (C,)."""

    def __init__(self, aggregation: Aggregation) -> None:
        self.aggregation = aggregation
        self.total: torch.Tensor | None = None  # (C,) float64: running sum, sum of squares or max
        self.count = 0  # rows (sequences) seen

    def update(self, a: torch.Tensor) -> None:
        """Add a batch of activations a: (B, L, C) (or (B, C) already reduced over the sequence)."""
        a = a.detach().abs().to(torch.float64)
        if a.dim() == 3:
            seq = self.aggregation.sequence
            a = a.mean(1) if seq == "mean" else a.sum(1) if seq == "sum" else a.amax(1)  # (B, C)
        batch = self.aggregation.batch
        part = a.square().sum(0) if batch == "l2" else a.amax(0) if batch == "max" else a.sum(0)  # (C,)
        if self.total is None:
            self.total = part
        elif batch == "max":
            self.total = torch.maximum(self.total, part)
        else:
            self.total = self.total + part
        self.count += a.shape[0]

    def value(self) -> torch.Tensor:
        """The score per unit, (C,) float64 on CPU."""
        if self.total is None:
            raise RuntimeError("RunningStat: no activation was recorded (did the forward reach the hook?)")
        total = self.total.cpu()
        if self.aggregation.batch == "l2":
            return total.sqrt()
        return total / self.count if self.aggregation.batch == "mean" else total


# A hook point: the module, and a function of (module inputs, module output) -> activation (B, L, C).
Pick = Callable[[tuple, torch.Tensor], torch.Tensor]


def output_of(args: tuple, output: torch.Tensor) -> torch.Tensor:
    """Pick the module's output."""
    return output


def input_of(args: tuple, output: torch.Tensor) -> torch.Tensor:
    """Pick the module's first positional input."""
    return args[0]


@contextlib.contextmanager
def collect(
    points: dict[str, tuple[nn.Module, Pick]], aggregation: Aggregation | None = None
) -> Iterator[dict[str, RunningStat]]:
    """Record a `RunningStat` at every hook point during the forwards run inside the block.

    Args:
        points: name -> (module, pick); `pick(inputs, output)` returns the activation (B, L, C) to score.
        aggregation: the reduction (default: mean over the sequence, L2 over the batch).

    Yields:
        name -> RunningStat (read `.value()` after the forwards).
    """
    aggregation = aggregation or Aggregation()
    stats = {name: RunningStat(aggregation) for name in points}
    handles = []
    try:
        for name, (module, pick) in points.items():

            def hook(
                module: nn.Module, args: tuple, output: torch.Tensor, stat=stats[name], pick=pick
            ) -> None:
                stat.update(pick(args, output))

            handles.append(module.register_forward_hook(hook))
        yield stats
    finally:
        for handle in handles:
            handle.remove()
