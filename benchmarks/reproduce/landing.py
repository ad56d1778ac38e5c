# SPDX-License-Identifier: Apache-2.0
"""The reading of the decision study (`decision.py`): where each budget's deployed sub-model lands, its
held-out perplexity at matched size against the recipe's, and which form of `router.decision` and
`router.budget_probs` that evidence supports.

Pure Python (no torch), like `paired.py`. **Landing:** a budget's sub-model lands when its parameter ratio
is within the dead zone (5%) of the budget. **Perplexity at matched size:** the variant against the recipe
(`paired.compare`: same spec, or both size curves at the budget); when that is refused because a variant's
sub-models land outside the dead zone, each seed's sub-model is read against the recipe's size curve of the
same seed at the sub-model's own size, with the spread of the curves there.

**The rule for a form** (the project's value against the paper's, one variant changing only it): the
project's form stays when it is called lower in perplexity somewhere and higher nowhere, or when its
sub-models land more often and its perplexity is called higher nowhere; otherwise the paper's form is
restored, so a tie goes to the paper, as for the scoring points.
"""

from __future__ import annotations

from typing import Any

import curves as cv
import paired as pr
from tables import BUDGET_LABELS, md_table, pairs_with

# form: (config key, the project's value, the paper's value, the decision-study variant that changes it alone)
FORMS = {"router.decision": ("within_budget", "argmax", "decision:argmax"),
         "router.budget_probs": ("unsharpened", "sampled", "decision:sampled")}


def landed(ratio: float, budget: float, dead_zone: float = pr.DEAD_ZONE) -> bool:
    return abs(ratio / budget - 1) <= dead_zone + cv.SIZE_EPS


def landings(runs: list[dict]) -> dict[str, dict[str, dict[int, float]]]:
    """{budget label: {"deployed": {seed: param ratio of the checkpoint's sub-model}, "argmax": {seed: param
    ratio of the router's row-wise argmax}}} over elastic runs."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    for r in runs:
        for entry in r["budgets"]["budgets"]:
            b = f"{entry['budget']:g}"
            slot = out.setdefault(b, {"deployed": {}, "argmax": {}})
            slot["deployed"][int(r["seed"])] = entry["param_ratio"]
            if b in r.get("router_argmax", {}):
                slot["argmax"][int(r["seed"])] = r["router_argmax"][b]
    return out


def at_own_size(results: dict, a: str, b: str, label: str, ctx: str) -> pr.Comparison:
    """a's sub-model of each seed against b's size curve (same seed) at a's own size; the tie rule with the
    largest spread of the curves at those sizes (unmeasured when any is)."""
    sa, cb = cv.series(results, a, label, ctx), cv.route_curves(results, b, ctx)
    seeds = sorted(s for s in sa if s in cb)
    outside = [f"seed {s}: {sa[s]['param_ratio']:.3f}x outside [{cb[s].lo:.3f}, {cb[s].hi:.3f}]"
               for s in seeds if not cb[s].covers(sa[s]["param_ratio"])]
    if outside or not seeds:
        why = "; ".join(outside) if outside else "no common seed"
        return pr.Comparison(a, b, label, ctx, "at its own size", verdict=pr.Verdict(pr.REFUSED, 0, why))
    rows = {s: pr.Row(sa[s]["perplexity"], cb[s](sa[s]["param_ratio"]), sa[s]["param_ratio"], sa[s]["param_ratio"])
            for s in seeds}
    spreads = [cv.curve_spread(results, r.size_a, ctx) for r in rows.values()]
    spr = None if any(x is None for x in spreads) else max(spreads)
    return pr.Comparison(a, b, label, ctx, "at its own size", rows, spr,
                         pr.tie_rule({s: r.diff for s, r in rows.items()}, spr))


def analysis(study: dict, decision: dict, ctx: str) -> dict[str, list[dict[str, Any]]]:
    """{variant (and "recipe"): per budget {"budget", "deployed", "argmax" (seed -> ratio), "landed",
    "argmax_landed" (count), "comparison" (against the recipe; None for the recipe)}}. Empty when the two
    JSONs come from different scored parents or plans."""
    if not pairs_with(study, decision):
        return {}
    merged = {"runs": study["runs"] | decision["runs"]}
    names = ["elastic"] + sorted({r["variant"] for r in decision["runs"].values()})
    out: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        runs = [r for r in merged["runs"].values() if r.get("variant") == name and r.get("order_seed") is None]
        rows = []
        for label, land in sorted(landings(runs).items(), key=lambda kv: -float(kv[0])):
            if label not in BUDGET_LABELS:
                continue
            budget = float(label)
            row = {"budget": label, **land,
                   "landed": sum(landed(x, budget) for x in land["deployed"].values()),
                   "argmax_landed": sum(landed(x, budget) for x in land["argmax"].values()), "comparison": None}
            if name != "elastic":
                c = pr.compare(merged, name, "elastic", label, ctx)
                row["comparison"] = at_own_size(merged, name, "elastic", label, ctx) if c.verdict.status == pr.REFUSED else c
            rows.append(row)
        out["recipe" if name == "elastic" else name.removeprefix("decision:")] = rows
    return out


def form_verdicts(rows: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """{form: {"project", "paper", "chosen" (None while unmeasured), "why"}} by the module's rule."""
    out = {}
    for form, (project, paper, variant) in FORMS.items():
        entry = {"project": project, "paper": paper, "chosen": None, "why": "not measured"}
        v = rows.get(variant.removeprefix("decision:"))
        if v and rows.get("recipe"):
            effects = [r["comparison"].verdict.effect for r in v if r["comparison"] is not None
                       and r["comparison"].verdict.status == pr.CALLED]
            paper_lower, paper_higher = -1 in effects, 1 in effects
            recipe = {r["budget"]: r for r in rows["recipe"]}
            n_paper = sum(r["landed"] for r in v)
            n_project = sum(landed(x, float(r["budget"])) for r in v if r["budget"] in recipe
                            for s, x in recipe[r["budget"]]["deployed"].items() if s in r["deployed"])
            keep = (paper_higher and not paper_lower) or (n_project > n_paper and not paper_lower)
            ppl = ("the paper's form called higher" if paper_higher and not paper_lower else
                   "the paper's form called lower" if paper_lower and not paper_higher else
                   "mixed" if paper_lower else "a tie")
            entry |= {"chosen": project if keep else paper,
                      "why": f"perplexity: {ppl}; landed within the dead zone: {n_project} (project) vs {n_paper} (paper)"}
        out[form] = entry
    return out


def decision_table(rows: dict[str, list[dict[str, Any]]], ctx: str) -> list[str]:
    def ratios(d: dict[int, float]) -> str:
        return ", ".join(f"s{s} {x:.3f}" for s, x in sorted(d.items())) or "-"

    lines = []
    for name, entries in rows.items():
        for e in entries:
            c = e["comparison"]
            n = len(e["deployed"])
            cells = ["-"] * 4 if c is None else [
                c.method, ", ".join(f"s{s} {d:+.2f}" for s, d in c.diffs.items()) or "-",
                "unmeasured" if c.spread is None else f"{c.spread:.2f}", c.verdict.text("variant lower", "variant higher")]
            lines.append([name, e["budget"], ratios(e["deployed"]), f"{e['landed']} of {n}", ratios(e["argmax"]),
                          f"{e['argmax_landed']} of {len(e['argmax'])}", *cells])
    if not lines:
        return ["No decision run pairs with this study (none yet, or another scored parent)."]
    return md_table(["variant", "budget", "deployed params / parent", "landed", "router's argmax", "argmax landed",
                     f"ppl @ {ctx} compared", "variant − recipe", "spread", "verdict"], lines)


def verdict_lines(rows: dict[str, list[dict[str, Any]]]) -> list[str]:
    return [f"- `{form}`: " + (f"**{v['chosen']}**" if v["chosen"] else "undecided") +
            f" (project: `{v['project']}`, paper: `{v['paper']}`; {v['why']})"
            for form, v in form_verdicts(rows).items()]
