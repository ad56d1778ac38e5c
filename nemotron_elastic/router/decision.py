# SPDX-License-Identifier: Apache-2.0
"""The router's decision within the budget: the sub-model the router scores highest among those whose cost
is within the budget's tolerance (`router.decision: within_budget`, the default).

The paper and NVIDIA's code take the argmax of every row of the router's output. The budget loss only sees
the *expected* cost, so that argmax can cost e.g. 0.555 of the parent at budget 0.5 while the loss is zero:
on a coarse lattice of sizes (here 0.463 / 0.486 / 0.555 near 0.5) no single row's flip lands, and the
gradient moves one row back and forth. So the decision is

    c* = argmax_c  sum_rows score[row, c_row]   subject to   |cost(c) / (budget * cost(parent)) - 1| <= tol

with score = the router's logits (export, evaluation) or its Gumbel-perturbed logits (a training step).
It *is* the row-wise argmax whenever that lands (then it is the unconstrained maximum); otherwise it is the
most preferred sub-model that does. `argmax` keeps the paper's rule.

Exact costs by decomposition. hidden, Mamba head dim and depth are *global* axes (they scale every layer);
the others are rows: one per axis when homogeneous, one per layer when per layer. With the global choices
g fixed, the cost model is affine in every row's size and no two rows multiply (a layer has one type), so

    cost(c) = const[g] + sum_r delta[g, r, c_r]      exactly

`CostTable` computes const and delta once per run, by autograd of the cost model at zero row sizes. A
decision is then a multiple-choice knapsack with a two-sided bound, solved per global choice by dynamic
programming over cost bins (1/16 of the tolerance band divided by the number of rows), each bin keeping
its best path and that path's exact cost; global choices are visited best-first and pruned by their score
bound. It lands whenever a choice more than 1/16 of the band inside the band's edges exists, and scores at
least as high as every such choice (`_knapsack`).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from ..config.model import ModelConfig
from ..subnet.cost import Sizes
from .budget_loss import cost_of
from .menus import AxisMenu

GLOBAL_AXES = ("hidden", "mamba_head_dim", "depth")
_BINS_PER_ROW = 16  # bins per band and row: R rows' merges drift < 1/16 band


class CostTable:
    """cost(choice) / cost(parent) = const[g] + sum_r delta[g, r, c_r] for every choice of the menus.

    Attributes:
        global_axes: the menus' global axes; `combos[g]` is one choice index per global axis.
        rows: (axis, row) per row variable; row is 0 for a homogeneous axis, the layer rank when per layer.
        const: (G,) float64.  delta: (G, R, C) float64 (C = the widest menu; padded entries unused).
        valid: (R, C) bool, False where a row's menu is shorter than C.
    """

    def __init__(self, parent: ModelConfig, menus: dict[str, AxisMenu], kind: str = "params",
                 memory: dict | None = None):
        self.parent, self.menus, self.kind, self.memory = parent, menus, kind, memory
        self.global_axes = [a for a in GLOBAL_AXES if a in menus]
        self.row_axes = [a for a in menus if a not in GLOBAL_AXES]
        self.rows = [(a, r) for a in self.row_axes
                     for r in range(menus[a].num_rows if menus[a].per_layer else 1)]
        width = max([menus[a].num_choices for a in self.row_axes], default=1)
        self.valid = np.zeros((len(self.rows), width), dtype=bool)
        for i, (axis, _) in enumerate(self.rows):
            self.valid[i, : menus[axis].num_choices] = True
        self.full = float(cost_of(parent, Sizes.full(parent), kind, memory))
        self.combos = list(itertools.product(*(range(menus[a].num_choices) for a in self.global_axes)))
        parts = [self._decompose(dict(zip(self.global_axes, combo))) for combo in self.combos]
        self.const = np.array([c for c, _ in parts])
        self.delta = np.stack([d for _, d in parts])  # combos holds one empty tuple without global axes

    def _decompose(self, chosen: dict[str, int]) -> tuple[float, np.ndarray]:
        p, menus = self.parent, self.menus
        full = Sizes.full(p)
        values = {name: getattr(full, name) for name in ("hidden", "mlp", "attention_heads", "mamba_heads",
                                                         "mamba_head_dim", "layer_keep")}
        for axis in ("hidden", "mamba_head_dim"):
            if axis in chosen:
                values[axis] = menus[axis].choices[0, chosen[axis]].double()
        if "depth" in chosen:
            menu = menus["depth"]
            dropped = list(menu.drop_order[: int(menu.choices[0, chosen["depth"]])])
            keep = values["layer_keep"].clone()
            values["layer_keep"] = keep.index_fill_(0, torch.tensor(dropped, dtype=torch.long), 0.0)
        # the row sizes at zero, as leaves: the cost is affine in each, so its gradient is the slope per layer
        widths = {a: torch.zeros(menus[a].num_rows, dtype=torch.float64, requires_grad=True)
                  for a in self.row_axes}
        values.update(widths)
        cost = cost_of(p, Sizes(**values), self.kind, self.memory)
        slopes = torch.autograd.grad(cost, list(widths.values())) if widths else []
        delta = np.zeros(self.valid.shape)
        i = 0
        for axis, slope in zip(self.row_axes, slopes):
            per_layer = (slope[:, None] * menus[axis].choices.double()).numpy()  # (L, C): each layer's size
            rows = per_layer if menus[axis].per_layer else per_layer.sum(0, keepdims=True)
            delta[i: i + len(rows), : rows.shape[1]] = rows
            i += len(rows)
        return float(cost.detach()) / self.full, delta / self.full

    def ratio(self, choice: dict[str, torch.Tensor]) -> float:
        """cost(choice) / cost(parent) from the table (equals the cost model on the choice's spec)."""
        g = self.combos.index(tuple(int(choice[a][0]) for a in self.global_axes))
        cols = self._row_columns(choice)
        return float(self.const[g] + self.delta[g, np.arange(len(self.rows)), cols].sum())

    def span(self) -> tuple[float, float]:
        """(cheapest, dearest) cost of any choice, as fractions of the parent's."""
        low = np.where(self.valid, self.delta, np.inf).min(2).sum(1) if len(self.rows) else 0.0
        high = np.where(self.valid, self.delta, -np.inf).max(2).sum(1) if len(self.rows) else 0.0
        return float((self.const + low).min()), float((self.const + high).max())

    def _row_columns(self, choice: dict[str, torch.Tensor]) -> np.ndarray:
        return np.array([int(choice[axis][r]) for axis, r in self.rows], dtype=np.int64)


def argmax_choice(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The paper's rule: per axis and row the index of the best score -> {axis: (rows,) long}."""
    return {axis: s.detach().argmax(-1).cpu() for axis, s in scores.items()}


def within_budget(table: CostTable, scores: dict[str, torch.Tensor], budget: float,
                  tolerance: float = 0.05) -> dict[str, torch.Tensor] | None:
    """The highest-scoring choice whose cost is within `tolerance` of `budget` (fractions of the parent's
    cost); None when no sub-model of the menus is.

    Args:
        table: the menus' CostTable.
        scores: {axis: (rows or 1, C)} log-scores (logits; add Gumbel noise and divide by tau for a sample).
        budget: target cost as a fraction of the parent's.
        tolerance: relative half-width of the accepted band (the budget loss' dead zone).

    Returns:
        {axis: (rows,) long}: one chosen index per row (1 row for homogeneous and global axes).
    """
    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"tolerance: must be in (0, 1), got {tolerance}")
    lo, hi = budget * (1.0 - tolerance), budget * (1.0 + tolerance)
    best = argmax_choice(scores)
    if lo <= table.ratio(best) <= hi:
        return best  # the unconstrained maximum lands: nothing to trade
    arrays = {axis: s.detach().double().cpu().numpy() for axis, s in scores.items()}  # once per decision
    row_scores = np.full(table.valid.shape, -np.inf)
    for i, (axis, r) in enumerate(table.rows):
        s = arrays[axis]
        row_scores[i, : s.shape[1]] = s[r if s.shape[0] > 1 else 0]
    global_scores = np.array([sum(arrays[a][0, k] for a, k in zip(table.global_axes, combo))
                              for combo in table.combos], dtype=np.float64)
    row_bound = row_scores.max(1).sum() if len(table.rows) else 0.0
    found, found_score = None, -np.inf
    for g in np.argsort(-global_scores, kind="stable"):
        if global_scores[g] + row_bound <= found_score:
            break  # no later global choice can do better
        solved = _knapsack(table.const[g], table.delta[g], table.valid, row_scores, lo, hi)
        if solved is not None and global_scores[g] + solved[0] > found_score:
            found_score, found = global_scores[g] + solved[0], (g, solved[1])
    if found is None:
        return None
    g, cols = found
    out = {a: torch.tensor([k]) for a, k in zip(table.global_axes, table.combos[g])}
    for axis in table.row_axes:
        out[axis] = torch.tensor([int(c) for (a, _), c in zip(table.rows, cols) if a == axis])
    return out


def _knapsack(const: float, delta: np.ndarray, valid: np.ndarray, scores: np.ndarray, lo: float,
              hi: float) -> tuple[float, np.ndarray] | None:
    """max sum_r scores[r, c_r]  s.t.  lo <= const + sum_r delta[r, c_r] <= hi.  -> (score, (R,) columns).

    Each bin of width w keeps its best-scoring partial path (with that path's exact cost), so a merge
    replaces a path by one at least as good whose cost differs by < w. Following the optimum's choices
    from the kept paths then drifts < R * w in cost: the answer lands, and scores at least as high as any
    choice whose cost is R * w (1/16 of the band) inside the band's edges. Choices closer to an edge can
    be missed."""
    num_rows = delta.shape[0]
    floor = np.where(valid, delta, np.inf).min(1) if num_rows else np.zeros(0)
    base = const + floor.sum()
    extra = np.where(valid, delta - floor[:, None], 0.0)  # >= 0: cost above each row's cheapest choice
    if base > hi + 1e-12 or base + extra.max(1, initial=0.0).sum() < lo - 1e-12:
        return None
    capacity = hi - base
    width = (hi - lo) / (_BINS_PER_ROW * max(4, num_rows))
    bins = int(capacity / width) + 1
    score = np.full(bins, -np.inf)
    cost = np.zeros(bins)  # exact extra cost of the path kept in each bin
    score[0] = 0.0
    back_col = np.zeros((num_rows, bins), dtype=np.int32)
    back_bin = np.zeros((num_rows, bins), dtype=np.int32)
    for r in range(num_rows):
        live = np.flatnonzero(np.isfinite(score))  # ascending, and so are the kept paths' costs
        live_cost, live_score = cost[live], score[live]
        score, cost = np.full(bins, -np.inf), np.zeros(bins)
        for c in np.flatnonzero(valid[r]):
            cc = live_cost + extra[r, c]
            n = int(np.searchsorted(cc, capacity + 1e-12, side="right"))  # the paths that still fit
            if n == 0:
                continue
            cc, cs, src = cc[:n], live_score[:n] + scores[r, c], live[:n]
            dst = np.minimum((cc / width).astype(np.int64), bins - 1)  # non-decreasing along the paths
            new = np.r_[True, dst[1:] != dst[:-1]]
            segment = np.cumsum(new) - 1
            best = np.maximum.reduceat(cs, np.flatnonzero(new))
            top = np.flatnonzero(cs == best[segment])
            top = top[np.r_[True, segment[top][1:] != segment[top][:-1]]]  # the first best of each bin
            d = dst[top]
            better = cs[top] > score[d]
            d, top = d[better], top[better]
            score[d], cost[d] = cs[top], cc[top]
            back_col[r, d], back_bin[r, d] = c, src[top]
    feasible = np.isfinite(score) & (base + cost >= lo - 1e-12)
    if not feasible.any():
        return None
    end = int(np.argmax(np.where(feasible, score, -np.inf)))
    total, chosen = float(score[end]), np.zeros(num_rows, dtype=np.int64)
    for r in range(num_rows - 1, -1, -1):
        chosen[r] = back_col[r, end]
        end = back_bin[r, end]
    return total, chosen


def decide(scores: dict[str, torch.Tensor], budget: float, table: CostTable | None = None,
           tolerance: float = 0.05) -> dict[str, torch.Tensor]:
    """The router's choice: within the budget when `table` is given (falling back to the argmax when no
    sub-model lands), else the row-wise argmax."""
    if table is None:
        return argmax_choice(scores)
    return within_budget(table, scores, budget, tolerance) or argmax_choice(scores)
