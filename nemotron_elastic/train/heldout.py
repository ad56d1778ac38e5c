# SPDX-License-Identifier: Apache-2.0
"""Held-out evaluation data of a run: the windows of every held-out source, and per-source sums of losses.

Each source (`RunData.heldout`) contributes its first `data.eval_tokens` tokens as sequential windows at stage
1's context. The reported loss of a budget is the mean over every counted target of every source; with more
than one source, each source's own means follow under "sources". With `data.loss_on: assistant` the
targets counted are the ones training counts (assistant tokens of chat sources, every token of text).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from ..data.blend import Batch, eval_windows
from ..data.run_data import RunData

EVAL_BATCH = 8  # windows per forward


def heldout_batches(run: RunData, seq_len: int, eval_tokens: int, device: torch.device) -> Iterator[tuple[str, Batch]]:
    """(source name, batch on `device`) over every held-out source, `eval_tokens` tokens each (at least one
    window)."""
    windows = max(1, eval_tokens // seq_len)
    for stream in run.heldout:
        for batch in eval_windows(stream, seq_len, EVAL_BATCH, windows, run.masked):
            yield stream.name, batch.to(device)


def counted_targets(batch: Batch) -> tuple[torch.Tensor, int]:
    """(targets (B, T) with uncounted positions set to -100, the number counted)."""
    targets = batch.tokens[:, 1:]
    if batch.loss_mask is None:
        return targets, targets.numel()
    return targets.masked_fill(~batch.loss_mask, -100), int(batch.loss_mask.sum())


class HeldoutSums:
    """Sums of per-token losses and counts per source; `result()` gives the means (and perplexity)."""

    def __init__(self) -> None:
        self.sums: dict[str, dict[str, float]] = {}
        self.counts: dict[str, int] = {}

    def add(self, source: str, means: dict[str, float], count: int) -> None:
        """means: each loss' mean over the `count` counted targets of one batch."""
        row = self.sums.setdefault(source, {})
        for key, value in means.items():
            row[key] = row.get(key, 0.0) + value * count
        self.counts[source] = self.counts.get(source, 0) + count

    @staticmethod
    def _means(sums: dict[str, float], count: int) -> dict[str, float]:
        out = {k: v / max(count, 1) for k, v in sums.items()}
        if "ce" in out:
            out["ppl"] = math.exp(out["ce"])
        return out

    def result(self) -> dict[str, Any]:
        """{loss: mean over every source's counted targets, ..., ppl[, sources: {name: {...}}]}."""
        total: dict[str, float] = {}
        for row in self.sums.values():
            for k, v in row.items():
                total[k] = total.get(k, 0.0) + v
        out: dict[str, Any] = self._means(total, sum(self.counts.values()))
        if len(self.sums) > 1:
            out["sources"] = {name: self._means(row, self.counts[name]) for name, row in self.sums.items()}
        return out
