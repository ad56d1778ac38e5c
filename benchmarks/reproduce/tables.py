# SPDX-License-Identifier: Apache-2.0
"""The tables of docs/RESULTS.md, each a list of markdown lines built from the study's results dict: per-seed
perplexities, paired differences (`paired.py`), size curves, the spread of repeated runs, memory, depth cuts and
the training checks. Helpers shared with `claims.py`, `plots.py` and `report.py` live here too."""

from __future__ import annotations

import statistics

import curves as cv
import paired as pr

BUDGET_LABELS = ("1", "0.75", "0.5")
SUB_LABELS = BUDGET_LABELS[1:]  # the sub-models (budget 1 is the full model for every variant)
ROUTES = ("minitron", "minitronhalf", "scratch")


# --- helpers shared with plots.py ------------------------------------------------------------------------------


def variant_values(results: dict, variant: str, label: str, ctx: str, key: str = "perplexity") -> list[float]:
    """Per seed (runs on their own data order only) the value at `label` and `ctx`."""
    return [r["eval"][ctx][label][key] for r in results["runs"].values()
            if r["variant"] == variant and r.get("order_seed") is None and label in r["eval"].get(ctx, {})]


def mean_halfrange(values: list[float]) -> tuple[float, float] | None:
    """(mean, half the range) of the values: a summary for the plots, never a verdict."""
    if not values:
        return None
    return statistics.fmean(values), (max(values) - min(values)) / 2


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def millions(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def run_seeds(results: dict, variant: str) -> list[int]:
    return sorted({int(r["seed"]) for r in results["runs"].values()
                   if r["variant"] == variant and r.get("seed") is not None and r.get("order_seed") is None})


def spread_runs(results: dict) -> list[tuple[str, dict]]:
    return [(n, r) for n, r in results["runs"].items() if r.get("order_seed") is not None]


def row_cell(row: dict | None) -> str:
    return "-" if row is None else f"{row['perplexity']:.2f} ({row['param_ratio']:.2f}x)"


# --- per-seed tables -------------------------------------------------------------------------------------------


def seed_rows(results: dict, variant: str, name: str, labels, ctxs) -> list[list[str]]:
    rows = []
    for seed in run_seeds(results, variant):
        cells = [row_cell(cv.series(results, variant, b, c).get(seed)) for c in ctxs for b in labels]
        rows.append([name, str(seed)] + cells)
    return rows


def variant_table(results: dict, variants: list[tuple[str, str]], ctxs: list[str]) -> list[str]:
    header = ["run", "seed"] + [f"ppl {b} @ {c}" for c in ctxs for b in BUDGET_LABELS]
    rows = [r for v, name in variants for r in seed_rows(results, v, name, BUDGET_LABELS, ctxs)]
    return md_table(header, rows)


def family_table(results: dict, ctx: str) -> list[str]:
    T = results["plan"]["tokens"]
    parent = next((r for r in results["runs"].values() if r["variant"] == "before"), None)
    first = min(run_seeds(results, "elastic"), default=None)
    rows = []
    if parent is not None:
        rows.append([f"parent, seed-{first} specs cut before training", "-", "0", "yes"]
                    + [row_cell(parent["eval"][ctx].get(b)) for b in BUDGET_LABELS])
    for variant, name, tokens, uses in (("elastic", "**elastic** (one run, all three models)", T, "yes"),
                                        ("minitron", "Minitron route (prune, distil each size), T each", 2 * T, "yes"),
                                        ("minitronhalf", "Minitron route, T/2 each", None, "yes"),
                                        ("scratch", "from scratch (each size), T each", 2 * T, "no")):
        for seed in run_seeds(results, variant):
            if tokens is None:  # the half runs: whatever they were given, two models of it
                spent = sum(r["tokens"] for r in results["runs"].values()
                            if r["variant"] == variant and r.get("seed") == seed)
            else:
                spent = tokens
            rows.append([name, str(seed), millions(spent), uses]
                        + [row_cell(cv.series(results, variant, b, ctx).get(seed)) for b in BUDGET_LABELS])
    return md_table(["route", "seed", "tokens for the 0.75 + 0.5 models", "uses the parent"]
                  + [f"ppl {b}" for b in BUDGET_LABELS], rows)


# --- paired tables ---------------------------------------------------------------------------------------------


def diff_cell(c: pr.Comparison, seed: int, digits: int = 2) -> str:
    row = c.rows.get(seed)
    if row is None:
        return "-"
    if c.method == "same spec":
        return f"{row.diff:+.{digits}f} ({row.a:.{digits}f} vs {row.b:.{digits}f}, {row.size_a:.2f}x)"
    return f"{row.diff:+.{digits}f} ({row.a:.{digits}f} vs {row.b:.{digits}f} on the curves)"


def paired_table(comparisons: list[pr.Comparison], below: str, above: str, digits: int = 2) -> list[str]:
    seeds = sorted({s for c in comparisons for s in c.rows})
    several = len({c.b for c in comparisons}) > 1  # name b in its own column
    rows = []
    for c in comparisons:
        spread = "unmeasured" if c.spread is None else f"{c.spread:.{digits}f}"
        rows.append(([c.b] if several else []) + [f"{c.label} @ {c.ctx}", c.method]
                    + [diff_cell(c, s, digits) for s in seeds] + [spread, c.verdict.text(below, above)])
    return md_table((["b"] if several else []) + ["budget @ context", "compared"]
                  + [f"seed {s}: a − b" for s in seeds] + ["spread", "verdict"], rows)


def brief(c: pr.Comparison, digits: int = 2) -> str:
    diffs = ", ".join(f"s{s} {d:+.{digits}f}" for s, d in c.diffs.items()) or "no common seed"
    how = "" if c.method == "same spec" else f", {c.method}"
    return f"{c.label}@{c.ctx}{how}: {diffs} → {c.verdict.status}"


def curve_table(results: dict, variants: list[str], ctx: str) -> list[str]:
    rows = []
    for v in variants:
        for seed, curve in sorted(cv.route_curves(results, v, ctx).items()):
            rows.append([v, str(seed), str(curve.n), f"{curve.lo:.3f} - {curve.hi:.3f}", f"{curve.a:.3f}",
                         f"{curve.b:.3f}", f"{curve.rms:.4f}"])
    return md_table(["route", "seed", "points", "fitted sizes (x parent)", "a", "b", "rms residual of log ppl"], rows)


def spread_table(results: dict, ctxs: list[str]) -> list[str]:
    rows = []
    for ctx in ctxs:
        for b in BUDGET_LABELS:
            for p in cv.spread_pairs(results, b, ctx):
                how = ("same size" if p.same_size else "on the size curves at {b}x" if p.diff is not None
                       else "other sizes, outside the fitted curves: not measured")
                rows.append([f"{b} @ {ctx}", str(p.seed), str(p.order_seed), f"{p.main:.2f} ({p.main_size:.2f}x)",
                             f"{p.repeat:.2f} ({p.repeat_size:.2f}x)",
                             "-" if p.diff is None else f"{p.diff:.2f} ({how.format(b=b)})"])
    if not rows:
        return [("No repeated run in this JSON: the spread is unmeasured, so no paired comparison below calls an "
                "effect (signs that differ between seeds are still ties). The study's current plan repeats "
                "`elastic-s0` on another data order (`elastic-s0-o1000`).")]
    return md_table(["budget @ context", "seed", "data order of the repeat", "run", "repeat", "spread (run against repeat, at equal size)"],
                  rows)


def training_checks(results: dict) -> list[str]:
    """Per elastic run and budget: where the router's decision landed, and the held-out KD loss of that
    sub-model cut from the parent before training versus after; plus the KD of the router's decision at
    step 0 and at the first evaluation after it (the decisions move while the router learns)."""
    rows = []
    for name, run in results["runs"].items():
        if run["variant"] != "elastic":
            continue
        info, curve = run["budgets"], run["curve"]
        for entry in info["budgets"]:
            b = f"{entry['budget']:g}"
            before, after = info["before_training_eval"][b]["kd"], info["final_eval"][b]["kd"]
            ratio = entry["param_ratio"]
            argmax = run.get("router_argmax", {}).get(b)
            rows.append([name, b, f"{ratio:.3f}", f"{100 * (ratio / entry['budget'] - 1):+.1f}%",
                         "-" if argmax is None else f"{argmax:.3f}",
                         f"{before:.3f}", f"{after:.3f}", "yes" if after < before else "no",
                         f"{curve[0][b]['kd']:.3f} ({curve[0][b]['param_ratio']:.2f})",
                         f"{curve[1][b]['kd']:.3f} ({curve[1][b]['param_ratio']:.2f})" if len(curve) > 1 else "-"])
    return md_table(["run", "budget", "params / parent", "off target", "router's own argmax", "KD, spec cut before training",
                   "KD after training", "lower", "KD at step 0 (its params)", "KD at the next eval (params)"], rows)


def memory_table(results: dict) -> list[str]:
    mem = results.get("memory")
    if not mem:
        return ["Not measured yet (the study is partial)."]
    rows = [[f"separate checkpoint {b}", f"{v['params'] / 1e6:.2f}M", f"{v['bytes'] / 1e6:.1f} MB"]
            for b, v in mem["separate"].items()]
    rows.append(["**separate, all**", f"{mem['params_separate'] / 1e6:.2f}M", f"{mem['separate_bytes'] / 1e6:.1f} MB"])
    rows.append(["**one elastic checkpoint** (weights + router)", f"{mem['params_elastic'] / 1e6:.2f}M",
                 f"{mem['elastic_bytes'] / 1e6:.1f} MB"])
    return md_table(["family", "parameters", "weights on disk"], rows)


def depth_table(results: dict) -> list[str]:
    d = results.get("depth")
    if not d:
        return ["Not measured yet (the study is partial)."]
    rows = [[k, str(d["nmse"]["dropped"][k]), f"{d['nmse']['cut'][k]['perplexity']:.2f}",
             str(d["block_importance"]["dropped"][k]), f"{d['block_importance']['cut'][k]['perplexity']:.2f}"]
            for k in d["nmse"]["cut"]]
    return md_table(["layers dropped", "nMSE drops", "ppl", "Block Importance drops", "ppl"], rows)


def scoring_table(scoring: dict) -> list[str]:
    """The retrained scoring comparison (`scoring.py`): per axis and context, each seed's perplexity of the
    cut distilled from the default point's ranking and from the alternative's, their difference, the spread
    and the verdict; the zero-shot perplexities of the two cuts (seed-independent) beside them."""
    rows = []
    for axis, per_ctx in scoring.get("verdicts", {}).items():
        _, default, alt = scoring["axes"][axis]
        for ctx, v in per_ctx.items():
            zero = {p: next((r["zero_shot"][ctx] for r in scoring["runs"].values()
                             if r["axis"] == axis and r["point"] == p), None) for p in (default, alt)}
            seeds = sorted(v["diffs"], key=int)
            cells = "; ".join(f"s{s}: {v['default'][s]:.2f} vs {v['alternative'][s]:.2f} ({v['diffs'][s]:+.2f})"
                              for s in seeds)
            spread = "unmeasured" if v["spread"] is None else f"{v['spread']:.2f}"
            verdict = (f"**{v['winner']} lower**" if v["winner"] else f"{v['status']}: {v['reason']}")
            zs = " vs ".join("-" if zero[p] is None else f"{zero[p]:.2f}" for p in (default, alt))
            rows.append([axis, ctx, f"{default} vs {alt}", cells or "-", spread, verdict, zs])
    return md_table(["axis (cut to half)", "context", "default vs alternative", ("per seed: ppl default vs "
                     "alternative (difference)"), "spread", "verdict", "zero shot: default vs alternative"], rows)


# The paper's scoring point per axis (docs/METHOD.md 4.1); the paper gives no attention formula, so that axis
# has none to restore (Model-Optimizer's `o_proj_input` is the scoring study's alternative).
PAPER_POINTS = {"mlp": "pre", "mamba_heads": "x", "attention_heads": None}


def chosen_points(*studies: dict) -> dict[str, dict[str, str]]:
    """{axis: {"point", "why"}} from one or more scoring studies (`scoring.py`, one per parent): the point
    called lower at some context of some parent and at none the other way; with no such winner the paper's
    point (a tie, or opposite calls, restores the paper), or the studies' default where the paper gives none
    (attention)."""
    out = {}
    axes = {axis: study["axes"][axis] for study in studies for axis in study.get("verdicts", {})}
    for axis, (_, default, _alt) in axes.items():
        winners = {v["winner"] for study in studies for v in study.get("verdicts", {}).get(axis, {}).values()
                   if v["winner"]}
        why = "opposite calls" if winners else "no effect called"
        if len(winners) == 1:
            out[axis] = {"point": winners.pop(), "why": "called lower after distillation"}
        elif PAPER_POINTS.get(axis):
            out[axis] = {"point": PAPER_POINTS[axis], "why": f"{why}; the paper's point"}
        else:
            out[axis] = {"point": default, "why": f"{why}; the paper gives no point, the default stays"}
    return out


def pairs_with(study: dict, follow: dict) -> bool:
    """Whether a follow-up study's runs (`gap.py`, `decision.py`) pair with the study's: the same scored
    parent (weights SHA-256) and the same plan (steps, contexts, evaluation tokens, ...)."""
    if follow.get("scored_sha256") != study.get("scored_sha256"):
        return False
    plan = study.get("plan", {})
    return all(plan.get(k) == v for k, v in follow.get("training_key", {}).items() if k in plan)


def gap_analysis(study: dict, gap: dict, ctx: str) -> dict[str, list[dict]]:
    """Per variant of the gap study (`gap.py`) and budget: a = the variant against b = the recipe (its paired
    differences, spread and the tie rule's verdict), and the gap to the Minitron route of both (a - Minitron
    per seed). Empty when the two JSONs come from different scored parents or plans (nothing pairs then)."""
    if not pairs_with(study, gap):
        return {}
    merged = {"runs": study["runs"] | gap["runs"]}
    out: dict[str, list[dict]] = {}
    for name in sorted({r["variant"] for r in gap["runs"].values()}):
        rows = []
        for label in BUDGET_LABELS:
            if not cv.series(merged, name, label, ctx):
                continue
            c = pr.compare(merged, name, "elastic", label, ctx)
            row = {"budget": label, "comparison": c}
            if label != "1" and cv.series(merged, "minitron", label, ctx):
                row["gap_variant"] = pr.compare(merged, name, "minitron", label, ctx).diffs
                row["gap_recipe"] = pr.compare(merged, "elastic", "minitron", label, ctx).diffs
            rows.append(row)
        out[name.removeprefix("gap:")] = rows
    return out


def gap_table(study: dict, gap: dict, ctx: str) -> list[str]:
    def per_seed(diffs: dict | None) -> str:
        return "-" if not diffs else ", ".join(f"s{s} {d:+.2f}" for s, d in diffs.items())

    rows = []
    for name, entries in gap_analysis(study, gap, ctx).items():
        for e in entries:
            c = e["comparison"]
            spread = "unmeasured" if c.spread is None else f"{c.spread:.2f}"
            rows.append([name, f"{e['budget']} @ {ctx}", c.method, per_seed(c.diffs), spread,
                         c.verdict.text("variant lower", "variant higher"), per_seed(e.get("gap_recipe")),
                         per_seed(e.get("gap_variant"))])
    if not rows:
        return ["No gap run pairs with this study (none yet, or another scored parent)."]
    return md_table(["variant", "budget @ context", "compared", "variant − recipe", "spread", "verdict",
                     "recipe − Minitron", "variant − Minitron"], rows)


def is_length_variant(name: str) -> bool:
    """The gap study's training-length variants (`len2T`, `len4T`, ...: gap.py): the recipe trained on more
    tokens, a cost the user chooses rather than a setting a default could take."""
    return name.startswith("len") and name.endswith("T") and name[3:-1].isdigit()


def gap_reading(analysis: dict[str, list[dict]]) -> list[str]:
    """The gap table read out (`analysis`: `gap_analysis`'s result): which variants are called lower / higher
    than the recipe, and which are lower (or higher) in every seed without clearing the spread (a direction,
    not a verdict). Training-length variants get a line of their own: a call there says what more tokens buy,
    not that a default should change."""
    if not analysis:
        return []
    groups: dict[str, list[str]] = {"lower": [], "higher": [], "leans lower": [], "leans higher": [],
                                    "longer lower": [], "longer other": []}
    for name, entries in analysis.items():
        length = is_length_variant(name)
        for e in entries:
            c, values = e["comparison"], list(e["comparison"].diffs.values())
            where = f"{name} at {e['budget']}"
            if c.verdict.status == pr.CALLED:
                key = "lower" if c.verdict.effect < 0 else "higher"
            elif len(values) >= pr.MIN_SEEDS and all(d < 0 for d in values):
                key = "leans lower"
            elif len(values) >= pr.MIN_SEEDS and all(d > 0 for d in values):
                key = "leans higher"
            else:
                continue
            if length:
                groups["longer lower" if key == "lower" else "longer other"].append(
                    where if key == "lower" else f"{where} ({key})")
            else:
                groups[key].append(where)
    lines = [
        f"- Called lower than the recipe (a default would change): {', '.join(groups['lower']) or 'none'}.",
        f"- Called higher: {', '.join(groups['higher']) or 'none'}.",
        ("- Lower in every seed, but not beyond the spread in all (a direction only): "
         f"{', '.join(groups['leans lower']) or 'none'}; higher in the same way: {', '.join(groups['leans higher']) or 'none'}."),
    ]
    if groups["longer lower"] or groups["longer other"]:
        lines.append("- Training longer (more tokens: the user's cost, not a default): called lower at "
                     f"{', '.join(groups['longer lower']) or 'none'}; otherwise {', '.join(groups['longer other']) or 'none'}.")
    return lines
