# SPDX-License-Identifier: Apache-2.0
"""Size curves and the spread of repeated runs, read from the reproduction study's results dict
(`run.py`, `benchmarks/results/reproduce.json`); `paired.py` compares variants on them.

Pure Python (no torch).

**Size curves.** Per route and seed, a power law fitted by least squares over that route's budgets,

    log(ppl) = a + b * log(param_ratio)        (param_ratio = sub-model parameters / parent parameters)

read only inside the range of sizes it was fitted on (`OutsideFit` otherwise).

**Spread.** The |perplexity difference| between the same variant and seed trained on another data order
(`data.order_seed`), at equal size; when the repeat's router landed on another size, the two runs' size
curves are read at the budget's nominal size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SIZE_EPS = 1e-9  # float slack when testing a size against a curve's fitted range


# --- size curves ---------------------------------------------------------------------------------------------


class OutsideFit(ValueError):
    """A size outside the range a curve was fitted on."""


@dataclass(frozen=True)
class PowerLaw:
    """log(y) = a + b * log(x), fitted by least squares on points with lo <= x <= hi."""

    a: float
    b: float
    lo: float
    hi: float
    n: int
    rms: float  # root mean square residual of log(y)

    def covers(self, x: float) -> bool:
        return self.lo - SIZE_EPS <= x <= self.hi + SIZE_EPS

    def __call__(self, x: float) -> float:
        if not self.covers(x):
            raise OutsideFit(f"size {x:.3f} is outside the fitted sizes [{self.lo:.3f}, {self.hi:.3f}]")
        return math.exp(self.a + self.b * math.log(x))


def fit_power_law(points: Iterable[tuple[float, float]]) -> PowerLaw:
    """Least-squares fit of log(y) = a + b log(x) to (x, y) points; needs two distinct x > 0 and y > 0."""
    pts = [(math.log(x), math.log(y)) for x, y in points]
    xs = sorted({p[0] for p in pts})
    if len(xs) < 2:
        raise ValueError("a size curve needs points at two or more distinct sizes")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    a = my - b * mx
    rms = math.sqrt(sum((y - a - b * x) ** 2 for x, y in pts) / len(pts))
    return PowerLaw(a, b, math.exp(xs[0]), math.exp(xs[-1]), len(pts), rms)


# --- reading the results dict --------------------------------------------------------------------------------


def variant_runs(results: Mapping[str, Any], variant: str, order_seed: int | None = None) -> list[dict[str, Any]]:
    """The runs of `variant` on their own data order (`order_seed` None) or on another one."""
    return [r for r in results["runs"].values()
            if r.get("variant") == variant and r.get("seed") is not None and r.get("order_seed") == order_seed]


def series(results: Mapping[str, Any], variant: str, label: str, ctx: str,
           order_seed: int | None = None) -> dict[int, dict[str, float]]:
    """{seed: eval row (perplexity, params, param_ratio, ...)} of `variant` at budget `label` and context."""
    out = {}
    for r in variant_runs(results, variant, order_seed):
        row = r.get("eval", {}).get(ctx, {}).get(label)
        if row is not None:
            out[int(r["seed"])] = row
    return out


def parent_row(results: Mapping[str, Any], ctx: str) -> dict[str, float] | None:
    """The parent itself (the full spec of the before-training evaluation)."""
    for r in results["runs"].values():
        if r.get("variant") == "before":
            return r.get("eval", {}).get(ctx, {}).get("1")
    return None


def route_curves(results: Mapping[str, Any], variant: str, ctx: str,
                 order_seed: int | None = None) -> dict[int, PowerLaw]:
    """{seed: size curve} of a route: every budget its runs of that seed evaluated (an elastic run holds all
    its budgets, the Minitron and scratch routes one run per budget)."""
    points: dict[int, list[tuple[float, float]]] = {}
    for r in variant_runs(results, variant, order_seed):
        for row in r.get("eval", {}).get(ctx, {}).values():
            points.setdefault(int(r["seed"]), []).append((row["param_ratio"], row["perplexity"]))
    out = {}
    for seed, pts in points.items():
        if len({round(x, 12) for x, _ in pts}) >= 2:
            out[seed] = fit_power_law(pts)
    return out


@dataclass(frozen=True)
class SpreadPair:
    """One repeated run: the same variant and seed on another data order, and its partner. When the repeat
    landed on another size (a router run can), `matched` is the distance of the two runs' size curves at the
    budget's nominal size (None when either curve was not fitted over it): the spread of identical runs at
    equal size, not the difference between two architectures."""

    seed: int
    order_seed: int
    main: float
    repeat: float
    main_size: float
    repeat_size: float
    matched: float | None = None
    matched_log: float | None = None  # the same in log perplexity (nats per token)

    @property
    def log_diff(self) -> float | None:
        """The spread in held-out nats per token: |ln run - ln repeat| at the same size, else on the curves."""
        return abs(math.log(self.main / self.repeat)) if self.same_size else self.matched_log

    @property
    def same_size(self) -> bool:
        return abs(self.main_size - self.repeat_size) <= SIZE_EPS

    @property
    def diff(self) -> float | None:
        """The spread this pair measures: |run - repeat| at the same size, else `matched`."""
        return abs(self.main - self.repeat) if self.same_size else self.matched


def spread_pairs(results: Mapping[str, Any], label: str, ctx: str, variant: str = "elastic",
                 key: str = "perplexity") -> list[SpreadPair]:
    pairs = []
    curves = route_curves(results, variant, ctx)
    for r in results["runs"].values():
        if r.get("variant") != variant or r.get("order_seed") is None:
            continue
        seed = int(r["seed"])
        main = series(results, variant, label, ctx).get(seed)
        rep = r.get("eval", {}).get(ctx, {}).get(label)
        if main is None or rep is None:
            continue
        matched = matched_log = None
        own = route_curves({"runs": {"repeat": r}}, variant, ctx, r["order_seed"]).get(seed)
        size = float(label)
        if own is not None and seed in curves and own.covers(size) and curves[seed].covers(size):
            matched = abs(curves[seed](size) - own(size))
            matched_log = abs(math.log(curves[seed](size) / own(size)))
        pairs.append(SpreadPair(seed, int(r["order_seed"]), main[key], rep[key], main["param_ratio"],
                                rep["param_ratio"], matched, matched_log))
    return pairs


def spread(results: Mapping[str, Any], label: str, ctx: str, variant: str = "elastic") -> float | None:
    """The largest spread at `label` over the repeated runs (each: |run - repeat| at the same size, or their
    size curves' distance at the nominal size when the repeat landed elsewhere); None when the study has no
    repeated run or none measurable at that size."""
    diffs = [p.diff for p in spread_pairs(results, label, ctx, variant) if p.diff is not None]
    return max(diffs) if diffs else None


def curve_spread(results: Mapping[str, Any], size: float, ctx: str, variant: str = "elastic") -> float | None:
    """The spread on the size curves: |curve of a run - curve of its repeat| at `size` (largest over the
    repeated runs whose two curves both cover it); None when none does."""
    main = route_curves(results, variant, ctx)
    diffs = []
    for r in results["runs"].values():
        if r.get("variant") != variant or r.get("order_seed") is None:
            continue
        seed = int(r["seed"])
        rep = route_curves({"runs": {"x": r}}, variant, ctx, r["order_seed"]).get(seed)
        if rep is not None and seed in main and rep.covers(size) and main[seed].covers(size):
            diffs.append(abs(main[seed](size) - rep(size)))
    return max(diffs) if diffs else None
