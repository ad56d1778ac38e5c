# SPDX-License-Identifier: Apache-2.0
"""Paired comparisons of the reproduction study, and the rule that decides whether a difference is an effect.

Pure Python (no torch): it reads the results dict of `run.py` (`benchmarks/results/reproduce.json`).

**Pairing.** Two variants are compared seed by seed: the difference `a - b` of held-out perplexity of the
runs with the same seed, at the same budget and context. A run's seed sets its router init, Gumbel noise and
data order, so the runs of one seed share everything but the variant.

**Same size.** A budget's sub-models are the same size only when their parameter counts are equal (the
variants of one seed usually land on the same spec). Otherwise the two routes are compared on size curves:
per route and seed, a power law fitted by least squares over that route's budgets (`curves.py`),

    log(ppl) = a + b * log(param_ratio)        (param_ratio = sub-model parameters / parent parameters)

and the two curves are read at the same size: the budget's nominal size (e.g. 0.75x), or, when some curve
was not fitted over it, the size nearest to it that every curve covers, if that is within the budget's
dead zone (5%: where its sub-models land). A comparison at a size outside the range of sizes either curve
was fitted on is refused: an extrapolated curve decides nothing.

**The tie rule.** An effect is called only when the difference has the same sign in every seed (at least
`MIN_SEEDS`) and every |difference| is larger than the spread of repeated identical runs: the |perplexity
difference| between the same variant and seed trained on another data order (`data.order_seed`; the
study's spread runs), at equal size (when the repeat's router landed on another size, the two runs' size
curves are read at the budget's nominal size). Everything else is a tie or, while the spread is
unmeasured, not called.

Every verdict here is computed from numbers; facts that follow from arithmetic alone (file sizes) are
labelled `arithmetic`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from curves import (
    SIZE_EPS,
    PowerLaw,
    curve_spread,
    parent_row,
    route_curves,
    series,
    spread,
    spread_pairs,
    variant_runs,
)

MIN_SEEDS = 2  # "the same sign in every seed" says nothing with one seed
DEAD_ZONE = 0.05  # router.dead_zone of the study: a budget's sub-models land within 5% of it

CALLED, TIE, NOT_CALLED, REFUSED, ARITHMETIC, SINGLE = (
    "called", "tie", "not called", "refused", "arithmetic", "single measurement")


# --- the rule ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """status: called | tie | not called | refused | arithmetic | single measurement. effect: -1 when a is
    below b in every seed (lower perplexity / loss), +1 above, 0 when nothing is called. reason: why."""

    status: str
    effect: int = 0
    reason: str = ""

    def text(self, below: str = "a lower", above: str = "a higher") -> str:
        if self.status == CALLED:
            return f"**{below if self.effect < 0 else above}**"
        return f"{self.status}: {self.reason}" if self.reason else self.status


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def tie_rule(diffs: Mapping[Any, float], spread: float | None, min_seeds: int = MIN_SEEDS) -> Verdict:
    """Call an effect only when every difference has the same (non-zero) sign and is larger in size than
    `spread`. `diffs` maps seed -> a - b; `spread` is the |difference| of repeated identical runs (None: not
    measured, and then nothing is called)."""
    values = list(diffs.values())
    if len(values) < min_seeds:
        return Verdict(NOT_CALLED, 0, f"{len(values)} seed{'s' if len(values) != 1 else ''}; the rule needs {min_seeds}")
    signs = {_sign(d) for d in values}
    if len(signs) > 1 or 0 in signs:
        return Verdict(TIE, 0, "the sign differs between seeds" if len(signs) > 1 else "a zero difference")
    if spread is None:
        return Verdict(NOT_CALLED, 0, "same sign in every seed, but the spread of repeated runs is not measured")
    smallest = min(abs(d) for d in values)
    if smallest <= spread:
        return Verdict(TIE, 0, f"same sign, but |difference| {smallest:.2f} is within the spread {spread:.2f}")
    return Verdict(CALLED, signs.pop(), f"same sign in all {len(values)} seeds, each beyond the spread {spread:.2f}")


def paired_differences(a: Mapping[Any, float], b: Mapping[Any, float]) -> dict[Any, float]:
    """{seed: a[seed] - b[seed]} over the seeds both have."""
    return {s: a[s] - b[s] for s in sorted(set(a) & set(b), key=str)}


def claim_verdict(verdicts: Iterable[Verdict], supports: int = -1) -> Verdict:
    """One claim decided over several comparisons (budgets, contexts): held when some comparison is called
    in the claim's direction (`supports`: the effect sign the claim predicts) and none against it; did not
    hold when called against only; mixed when both; otherwise nothing was called."""
    verdicts = list(verdicts)
    pro = sum(v.status == CALLED and v.effect == supports for v in verdicts)
    con = sum(v.status == CALLED and v.effect == -supports for v in verdicts)
    n = len(verdicts)
    if pro and not con:
        return Verdict("held", supports, f"called in its favour in {pro} of {n} comparisons, against in none")
    if con and not pro:
        return Verdict("did not hold", -supports, f"called against it in {con} of {n} comparisons, for it in none")
    if pro and con:
        return Verdict("mixed", 0, f"called for it in {pro} and against it in {con} of {n} comparisons")
    refused = sum(v.status == REFUSED for v in verdicts)
    unmeasured = sum(v.status == NOT_CALLED for v in verdicts)
    parts = [f"{k} {w}" for k, w in ((n - refused - unmeasured, "tie"), (unmeasured, "not called"),
                                      (refused, "refused")) if k]
    return Verdict("not shown", 0, "no effect called: " + ", ".join(parts) + f" of {n}")


# --- comparisons ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One seed of a comparison: the two values, their sizes (parameter ratios) and a - b."""

    a: float
    b: float
    size_a: float
    size_b: float

    @property
    def diff(self) -> float:
        return self.a - self.b


@dataclass
class Comparison:
    """a versus b at one budget and context, seed by seed. method: "same spec" (equal parameter counts in
    every seed), or "curves at <size>x" (read on the size curves); `spread` is the one the rule used."""

    a: str
    b: str
    label: str
    ctx: str
    method: str
    rows: dict[int, Row] = field(default_factory=dict)
    spread: float | None = None
    verdict: Verdict = field(default_factory=lambda: Verdict(NOT_CALLED, 0, "no common seed"))

    @property
    def diffs(self) -> dict[int, float]:
        return {s: r.diff for s, r in self.rows.items()}


def compare_at_size(curves_a: Mapping[int, PowerLaw], curves_b: Mapping[int, PowerLaw], size: float,
                    spread_: float | None, min_seeds: int = MIN_SEEDS) -> tuple[dict[int, Row], Verdict]:
    """Read both routes' curves at `size`, seed by seed, and apply the tie rule; refused when any seed's
    curve of either route was not fitted over `size`."""
    seeds = sorted(set(curves_a) & set(curves_b))
    outside = [f"seed {s}: {name} fitted on [{c.lo:.3f}, {c.hi:.3f}]" for s in seeds
               for name, c in (("a", curves_a[s]), ("b", curves_b[s])) if not c.covers(size)]
    if outside:
        return {}, Verdict(REFUSED, 0, f"{size:.3f}x is outside the fitted sizes ({'; '.join(outside)})")
    rows = {s: Row(curves_a[s](size), curves_b[s](size), size, size) for s in seeds}
    return rows, tie_rule({s: r.diff for s, r in rows.items()}, spread_, min_seeds)


def compare(results: Mapping[str, Any], a: str, b: str, label: str, ctx: str, min_seeds: int = MIN_SEEDS,
            spread_variant: str = "elastic") -> Comparison:
    """Variant a versus b at budget `label`: paired on the same spec when the parameter counts agree in
    every common seed, otherwise on the size curves at the budget's nominal size."""
    sa, sb = series(results, a, label, ctx), series(results, b, label, ctx)
    seeds = sorted(set(sa) & set(sb))
    if seeds and all(sa[s]["params"] == sb[s]["params"] for s in seeds):
        rows = {s: Row(sa[s]["perplexity"], sb[s]["perplexity"], sa[s]["param_ratio"], sb[s]["param_ratio"])
                for s in seeds}
        spr = spread(results, label, ctx, spread_variant)
        return Comparison(a, b, label, ctx, "same spec", rows, spr,
                          tie_rule({s: r.diff for s, r in rows.items()}, spr, min_seeds))
    ca, cb = route_curves(results, a, ctx), route_curves(results, b, ctx)
    size = matched_size(ca, cb, float(label)) or float(label)
    spr = curve_spread(results, size, ctx, spread_variant)
    rows, verdict = compare_at_size(ca, cb, size, spr, min_seeds)
    if not seeds and verdict.status != REFUSED:
        verdict = Verdict(NOT_CALLED, 0, "no common seed")
    return Comparison(a, b, label, ctx, f"curves at {size:.3g}x", rows, spr, verdict)


def matched_size(curves_a: Mapping[int, PowerLaw], curves_b: Mapping[int, PowerLaw], nominal: float,
                 dead_zone: float = DEAD_ZONE) -> float | None:
    """Where two routes' curves are read for a budget: its nominal size when every curve (of the seeds both
    routes have) was fitted over it, else the size nearest to it inside all their fitted ranges, when that
    is within the budget's dead zone (a budget's sub-models land anywhere in it); None otherwise."""
    seeds = set(curves_a) & set(curves_b)
    curves = [curves_a[s] for s in seeds] + [curves_b[s] for s in seeds]
    if not curves:
        return None
    lo, hi = max(c.lo for c in curves), min(c.hi for c in curves)
    if lo > hi + SIZE_EPS:
        return None
    size = min(max(nominal, lo), hi)
    return size if abs(size / nominal - 1) <= dead_zone + SIZE_EPS else None


def compare_to_parent(results: Mapping[str, Any], variant: str, ctx: str,
                      min_seeds: int = MIN_SEEDS) -> Comparison:
    """The full model (budget 1) of every seed of `variant` against the parent it started from."""
    parent = parent_row(results, ctx)
    rows = {}
    if parent is not None:
        rows = {s: Row(r["perplexity"], parent["perplexity"], r["param_ratio"], parent["param_ratio"])
                for s, r in series(results, variant, "1", ctx).items()}
    spr = spread(results, "1", ctx, variant)
    verdict = (tie_rule({s: r.diff for s, r in rows.items()}, spr, min_seeds) if rows
               else Verdict(NOT_CALLED, 0, "no parent evaluation"))
    return Comparison(variant, "parent", "1", ctx, "same spec", rows, spr, verdict)


def compare_kd_before_after(results: Mapping[str, Any], label: str, variant: str = "elastic",
                            min_seeds: int = MIN_SEEDS) -> Comparison:
    """Held-out KD to the parent of each run's own spec at `label`: after training (a) versus the same spec
    cut from the parent before training (b). The spread is that of the after-training KD over repeats on the
    same spec; where the repeat landed on another spec, the spread of held-out nats per token (log
    perplexity) at equal size (`SpreadPair.log_diff`): the teacher is fixed, so KD and cross-entropy move
    together."""
    rows = {}
    for r in variant_runs(results, variant):
        info = r.get("budgets") or {}
        before = info.get("before_training_eval", {}).get(label)
        after = info.get("final_eval", {}).get(label)
        if before is not None and after is not None:
            rows[int(r["seed"])] = Row(after["kd"], before["kd"], after["param_ratio"], before["param_ratio"])
    pairs = []
    for r in results["runs"].values():
        if r.get("variant") == variant and r.get("order_seed") is not None and int(r["seed"]) in rows:
            after = (r.get("budgets") or {}).get("final_eval", {}).get(label)
            main = rows[int(r["seed"])]
            if after is not None and abs(after["param_ratio"] - main.size_a) <= SIZE_EPS:  # equal size only
                pairs.append(abs(after["kd"] - main.a))
    if not pairs and "plan" in results:  # the repeat's spec differs: the held-out nats spread at equal size
        logs = [p.log_diff for p in spread_pairs(results, label, str(results["plan"]["seq_len"]), variant)
                if p.log_diff is not None]
        pairs = logs
    spr = max(pairs) if pairs else None
    return Comparison(f"{variant} after training", "before training", label, "train-eval", "same spec", rows,
                      spr, tie_rule({s: r.diff for s, r in rows.items()}, spr, min_seeds))


def compare_runs(results: Mapping[str, Any], a: str, b: str, labels: Sequence[str], ctxs: Sequence[str],
                 min_seeds: int = MIN_SEEDS) -> list[Comparison]:
    """`compare` at every budget and context where both variants have runs."""
    out = []
    for ctx in ctxs:
        for label in labels:
            if series(results, a, label, ctx) and series(results, b, label, ctx):
                out.append(compare(results, a, b, label, ctx, min_seeds))
    return out


def arithmetic(fact: bool, reason: str) -> Verdict:
    """A fact that follows from arithmetic on measured quantities (no seeds, no noise)."""
    return Verdict(ARITHMETIC, -1 if fact else 1, ("holds: " if fact else "fails: ") + reason)
