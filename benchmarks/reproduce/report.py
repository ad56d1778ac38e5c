# SPDX-License-Identifier: Apache-2.0
"""docs/RESULTS.md and its plots from the study's results dict (`run.py`); every number is read from it.

Comparisons are paired seed by seed and decided by the tie rule of `paired.py` (the same sign in every seed,
each difference beyond the spread of repeated runs); architectures of different sizes are compared on
fitted size curves, never as "the same size". Every verdict in the claims table is computed from numbers;
file-size facts are labelled arithmetic. A JSON without spread runs (studies before they existed) gets no
effect called: its paired tables show the signs and say that the spread is unmeasured.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import paired as pr

BUDGET_LABELS = ("1", "0.75", "0.5")
SUB_LABELS = BUDGET_LABELS[1:]  # the sub-models (budget 1 is the full model for every variant)
ROUTES = ("minitron", "minitronhalf", "scratch")


# --- helpers shared with plots.py ------------------------------------------------------------------------------


def _values(results: dict, variant: str, label: str, ctx: str, key: str = "perplexity") -> list[float]:
    """Per seed (runs on their own data order only) the value at `label` and `ctx`."""
    return [r["eval"][ctx][label][key] for r in results["runs"].values()
            if r["variant"] == variant and r.get("order_seed") is None and label in r["eval"].get(ctx, {})]


def _stat(values: list[float]) -> tuple[float, float] | None:
    """(mean, half the range) of the values: a summary for the plots, never a verdict."""
    if not values:
        return None
    return statistics.fmean(values), (max(values) - min(values)) / 2


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _millions(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def _seeds(results: dict, variant: str) -> list[int]:
    return sorted({int(r["seed"]) for r in results["runs"].values()
                   if r["variant"] == variant and r.get("seed") is not None and r.get("order_seed") is None})


def _spread_runs(results: dict) -> list[tuple[str, dict]]:
    return [(n, r) for n, r in results["runs"].items() if r.get("order_seed") is not None]


def _row_cell(row: dict | None) -> str:
    return "-" if row is None else f"{row['perplexity']:.2f} ({row['param_ratio']:.2f}x)"


# --- per-seed tables -------------------------------------------------------------------------------------------


def _seed_rows(results: dict, variant: str, name: str, labels, ctxs) -> list[list[str]]:
    rows = []
    for seed in _seeds(results, variant):
        cells = [_row_cell(pr.series(results, variant, b, c).get(seed)) for c in ctxs for b in labels]
        rows.append([name, str(seed)] + cells)
    return rows


def _variant_table(results: dict, variants: list[tuple[str, str]], ctxs: list[str]) -> list[str]:
    header = ["run", "seed"] + [f"ppl {b} @ {c}" for c in ctxs for b in BUDGET_LABELS]
    rows = [r for v, name in variants for r in _seed_rows(results, v, name, BUDGET_LABELS, ctxs)]
    return _table(header, rows)


def _family_table(results: dict, ctx: str) -> list[str]:
    T = results["plan"]["tokens"]
    parent = next((r for r in results["runs"].values() if r["variant"] == "before"), None)
    first = min(_seeds(results, "elastic"), default=None)
    rows = []
    if parent is not None:
        rows.append([f"parent, seed-{first} specs cut before training", "-", "0", "yes"]
                    + [_row_cell(parent["eval"][ctx].get(b)) for b in BUDGET_LABELS])
    for variant, name, tokens, uses in (("elastic", "**elastic** (one run, all three models)", T, "yes"),
                                        ("minitron", "Minitron route (prune, distil each size), T each", 2 * T, "yes"),
                                        ("minitronhalf", "Minitron route, T/2 each", None, "yes"),
                                        ("scratch", "from scratch (each size), T each", 2 * T, "no")):
        for seed in _seeds(results, variant):
            if tokens is None:  # the half runs: whatever they were given, two models of it
                spent = sum(r["tokens"] for r in results["runs"].values()
                            if r["variant"] == variant and r.get("seed") == seed)
            else:
                spent = tokens
            rows.append([name, str(seed), _millions(spent), uses]
                        + [_row_cell(pr.series(results, variant, b, ctx).get(seed)) for b in BUDGET_LABELS])
    return _table(["route", "seed", "tokens for the 0.75 + 0.5 models", "uses the parent"]
                  + [f"ppl {b}" for b in BUDGET_LABELS], rows)


# --- paired tables ---------------------------------------------------------------------------------------------


def _diff_cell(c: pr.Comparison, seed: int, digits: int = 2) -> str:
    row = c.rows.get(seed)
    if row is None:
        return "-"
    if c.method == "same spec":
        return f"{row.diff:+.{digits}f} ({row.a:.{digits}f} vs {row.b:.{digits}f}, {row.size_a:.2f}x)"
    return f"{row.diff:+.{digits}f} ({row.a:.{digits}f} vs {row.b:.{digits}f} on the curves)"


def _paired_table(comparisons: list[pr.Comparison], below: str, above: str, digits: int = 2) -> list[str]:
    seeds = sorted({s for c in comparisons for s in c.rows})
    several = len({c.b for c in comparisons}) > 1  # name b in its own column
    rows = []
    for c in comparisons:
        spread = "unmeasured" if c.spread is None else f"{c.spread:.{digits}f}"
        rows.append(([c.b] if several else []) + [f"{c.label} @ {c.ctx}", c.method]
                    + [_diff_cell(c, s, digits) for s in seeds] + [spread, c.verdict.text(below, above)])
    return _table((["b"] if several else []) + ["budget @ context", "compared"]
                  + [f"seed {s}: a − b" for s in seeds] + ["spread", "verdict"], rows)


def _brief(c: pr.Comparison, digits: int = 2) -> str:
    diffs = ", ".join(f"s{s} {d:+.{digits}f}" for s, d in c.diffs.items()) or "no common seed"
    how = "" if c.method == "same spec" else f", {c.method}"
    return f"{c.label}@{c.ctx}{how}: {diffs} → {c.verdict.status}"


def _curve_table(results: dict, variants: list[str], ctx: str) -> list[str]:
    rows = []
    for v in variants:
        for seed, curve in sorted(pr.route_curves(results, v, ctx).items()):
            rows.append([v, str(seed), str(curve.n), f"{curve.lo:.3f} - {curve.hi:.3f}", f"{curve.a:.3f}",
                         f"{curve.b:.3f}", f"{curve.rms:.4f}"])
    return _table(["route", "seed", "points", "fitted sizes (x parent)", "a", "b", "rms residual of log ppl"], rows)


def _spread_table(results: dict, ctxs: list[str]) -> list[str]:
    rows = []
    for ctx in ctxs:
        for b in BUDGET_LABELS:
            for p in pr.spread_pairs(results, b, ctx):
                rows.append([f"{b} @ {ctx}", str(p.seed), str(p.order_seed), f"{p.main:.2f} ({p.main_size:.2f}x)",
                             f"{p.repeat:.2f} ({p.repeat_size:.2f}x)", f"{p.diff:.2f}"])
    if not rows:
        return [("No repeated run in this JSON: the spread is unmeasured, so no paired comparison below calls an "
                "effect (signs that differ between seeds are still ties). The study's current plan repeats "
                "`elastic-s0` on another data order (`elastic-s0-o1000`).")]
    return _table(["budget @ context", "seed", "data order of the repeat", "run", "repeat", "spread |run − repeat|"],
                  rows)


# --- claims ----------------------------------------------------------------------------------------------------


def _no_worse(verdicts: list[pr.Verdict]) -> pr.Verdict:
    """A claim that a is as good as b or better: fails when any comparison is called against a; holds when
    every comparison is decided (a tie, or called in a's favour); otherwise undecided."""
    n = len(verdicts)
    worse = sum(v.status == pr.CALLED and v.effect > 0 for v in verdicts)
    if not n:
        return pr.Verdict("not measured", 0, "no runs")
    if worse:
        return pr.Verdict("did not hold", 1, f"a called worse in {worse} of {n} comparisons")
    undecided = sum(v.status in (pr.NOT_CALLED, pr.REFUSED) for v in verdicts)
    if undecided:
        return pr.Verdict("not decided", 0, f"{undecided} of {n} comparisons not called (spread unmeasured or "
                          "too few seeds) or refused; none called against")
    better = sum(v.status == pr.CALLED for v in verdicts)
    return pr.Verdict("held", -1, f"{better} of {n} called better, the rest ties")


def _claims(results: dict, ctx: str, long_ctx: str) -> list[list[str]]:
    rows: list[list[str]] = []

    def add(claim: str, how: str, verdict: pr.Verdict, evidence: str) -> None:
        rows.append([claim, how, f"**{verdict.status}**" + (f" ({verdict.reason})" if verdict.reason else ""),
                     evidence])

    T = results["plan"]["tokens"]
    paired = "paired by seed, tie rule"
    for b in SUB_LABELS:
        c = pr.compare_kd_before_after(results, b)
        if c.rows:
            add(f"Elastic training brings the {b} sub-model closer to the parent (held-out KD of each run's own "
                "spec, after training vs cut from the parent before)", paired,
                pr.claim_verdict([c.verdict]), _brief(c, 3))
    c = pr.compare_to_parent(results, "elastic", ctx)
    if c.rows:
        v = c.verdict
        if v.status == pr.CALLED:
            verdict = (pr.Verdict("did not hold", 1, "worse than the parent in every seed, beyond the spread")
                       if v.effect > 0 else pr.Verdict("held", -1, "better than the parent in every seed"))
        else:
            verdict = pr.Verdict("held" if v.status == pr.TIE else "not decided", 0, f"{v.status}: {v.reason}")
        add("The full model keeps the parent's quality (elastic budget 1 vs the parent)", paired, verdict, _brief(c))
    for route, claim in (
        ("minitron", (f"Elastic matches the Minitron route for half the tokens ({_millions(T)} for the family vs "
                     f"{_millions(2 * T)}: T per Minitron model)")),
        ("minitronhalf", (f"Elastic matches the Minitron route at equal total tokens ({_millions(T)} each: T/2 per "
                         "Minitron model)")),
    ):
        comps = [pr.compare(results, "elastic", route, b, ctx) for b in SUB_LABELS
                 if pr.series(results, route, b, ctx)]
        if comps:
            add(claim, paired + " (same spec: each seed's router specs)", _no_worse([x.verdict for x in comps]),
                "; ".join(_brief(x) for x in comps))
        else:
            add(claim, paired, pr.Verdict("not measured", 0, ""),
                f"No `{route}` runs in this JSON (the study's plan trains `{route}-<budget>-s<seed>`).")
    comps = [pr.compare(results, "elastic", "scratch", b, ctx) for b in SUB_LABELS
             if pr.series(results, "scratch", b, ctx)]
    if comps:
        add("Elastic beats training each model from scratch on T tokens (the elastic run spent T on all three)",
            paired, pr.claim_verdict(x.verdict for x in comps), "; ".join(_brief(x) for x in comps))
    for variant, claim, labels, ctxs in (
        ("stage1only", "Stage 2 (long context, full-model-weighted) improves on stage 1 alone (Table 4)",
         BUDGET_LABELS, (ctx, long_ctx)),
        ("stage2uniform", "Weighted stage-2 sampling beats uniform (Table 5)", BUDGET_LABELS, (ctx,)),
        ("uniformspecs", "Router-chosen specs beat common-ratio specs of the same cost (budgets < 1)", SUB_LABELS,
         (ctx,)),
        ("homogeneous", "Per-layer MLP menus beat one MLP size for all layers (budgets < 1)", SUB_LABELS, (ctx,)),
    ):
        comps = pr.compare_runs(results, "elastic", variant, labels, ctxs)
        if comps:
            add(claim, paired + " (size curves where the sizes differ)", pr.claim_verdict(x.verdict for x in comps),
                "; ".join(_brief(x) for x in comps))
    depth = results.get("depth")
    if depth:
        parts, wins, losses = [], 0, 0
        for k in depth["nmse"]["cut"]:
            a, b = depth["nmse"]["cut"][k]["perplexity"], depth["block_importance"]["cut"][k]["perplexity"]
            same = depth["nmse"]["dropped"][k] == depth["block_importance"]["dropped"][k]
            wins += a < b and not same
            losses += a > b and not same
            parts.append(f"drop {k}: {a:.2f} vs {b:.2f}" + (" (same layers)" if same else ""))
        status = ("lower" if wins and not losses else "higher" if losses and not wins
                  else "mixed" if wins else "the same layers")
        add("Normalized-MSE depth ranking beats Block Importance (zero shot)",
            "one parent, measured once (no seeds, no spread)",
            pr.Verdict(pr.SINGLE, 0, f"nMSE {status} (lower at {wins}, higher at {losses} cuts)"), "; ".join(parts) + ".")
    mem = results.get("memory")
    if mem:
        largest = max(mem["separate"].values(), key=lambda v: v["params"])
        ratio = mem["elastic_bytes"] / largest["bytes"]
        v = pr.arithmetic(mem["elastic_bytes"] < mem["separate_bytes"],
                          f"one checkpoint is the largest model's weights plus the router ({ratio:.3f}x its bytes); "
                          "separate checkpoints add up")
        add("One elastic checkpoint serves the family for the memory of its largest model (Table 3)",
            "arithmetic (file sizes)", v,
            f"{mem['elastic_bytes'] / 1e6:.1f} MB vs {mem['separate_bytes'] / 1e6:.1f} MB for separate checkpoints "
            f"({mem['separate_over_elastic']:.2f}x).")
    return rows


def _reading(results: dict, ctx: str, long_ctx: str) -> list[str]:
    """The claims table (kept under the old name: the doc's "Reading")."""
    return _table(["claim", "decided by", "verdict", "evidence (a − b per seed → verdict)"],
                  _claims(results, ctx, long_ctx))


# --- the rest of the doc ---------------------------------------------------------------------------------------


def _training_checks(results: dict) -> list[str]:
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
    return _table(["run", "budget", "params / parent", "off target", "router's own argmax", "KD, spec cut before training",
                   "KD after training", "lower", "KD at step 0 (its params)", "KD at the next eval (params)"], rows)


def _memory_table(results: dict) -> list[str]:
    mem = results.get("memory")
    if not mem:
        return ["Not measured yet (the study is partial)."]
    rows = [[f"separate checkpoint {b}", f"{v['params'] / 1e6:.2f}M", f"{v['bytes'] / 1e6:.1f} MB"]
            for b, v in mem["separate"].items()]
    rows.append(["**separate, all**", f"{mem['params_separate'] / 1e6:.2f}M", f"{mem['separate_bytes'] / 1e6:.1f} MB"])
    rows.append(["**one elastic checkpoint** (weights + router)", f"{mem['params_elastic'] / 1e6:.2f}M",
                 f"{mem['elastic_bytes'] / 1e6:.1f} MB"])
    return _table(["family", "parameters", "weights on disk"], rows)


def _depth_table(results: dict) -> list[str]:
    d = results.get("depth")
    if not d:
        return ["Not measured yet (the study is partial)."]
    rows = [[k, str(d["nmse"]["dropped"][k]), f"{d['nmse']['cut'][k]['perplexity']:.2f}",
             str(d["block_importance"]["dropped"][k]), f"{d['block_importance']['cut'][k]['perplexity']:.2f}"]
            for k in d["nmse"]["cut"]]
    return _table(["layers dropped", "nMSE drops", "ppl", "Block Importance drops", "ppl"], rows)


def _seed_list(seeds: list[int]) -> str:
    return ", ".join(str(s) for s in seeds) if seeds else "none"


def _header(results: dict, ctx: str, long_ctx: str) -> list[str]:
    plan = results["plan"]
    parent_tokens = results.get("parent_tokens")
    runs = results["runs"]
    train = sum(r.get("train_seconds") or 0 for r in runs.values())
    spreads = _spread_runs(results)
    device = results.get("device") or "not recorded in this JSON"
    planned = results.get("planned_runs")
    done = [n for n in (planned or []) if n in runs]
    status = ("" if results.get("complete", True) or not planned
              else f" **Partial study: {len(done)} of {len(planned)} planned runs finished.**")
    return [
        f"- Parent: `{Path(results['parent']).as_posix()}`, {results['parent_params'] / 1e6:.2f}M parameters"
        + (f", pretrained on {_millions(parent_tokens)} tokens" if parent_tokens else "") + ".",
        (f"- Every training run: {_millions(plan['tokens'])} tokens (T): {plan['stage1_steps']} stage-1 steps at "
         f"{plan['seq_len']} tokens of context, then {plan['stage2_steps']} stage-2 steps at {2 * plan['seq_len']}, "
         f"{plan['micro_batch'] * plan['grad_accum'] * plan['seq_len']} tokens per step; model LR {plan['lr']:g}. "
         "The T/2 Minitron runs take half the steps of each stage."),
        (f"- Seeds: elastic recipe {_seed_list(_seeds(results, 'elastic'))}; stage 1 only "
         f"{_seed_list(_seeds(results, 'stage1only'))}; stage 2 uniform {_seed_list(_seeds(results, 'stage2uniform'))}; "
         f"homogeneous {_seed_list(_seeds(results, 'homogeneous'))}; common-ratio specs "
         f"{_seed_list(_seeds(results, 'uniformspecs'))}; Minitron {_seed_list(_seeds(results, 'minitron'))}; Minitron "
         f"T/2 {_seed_list(_seeds(results, 'minitronhalf'))}; from scratch {_seed_list(_seeds(results, 'scratch'))}. "
         "Repeated runs on another data order (the spread): "
         + (", ".join(f"`{n}`" for n, _ in spreads) if spreads else "none in this JSON") + "."),
        (f"- Held-out data: the default corpus' held-out split, {plan['eval_tokens']} tokens, perplexity at "
         f"{ctx} and {long_ctx} tokens of context."),
        (f"- Device: {device}; training took {_duration(train)} in all (summed over runs)"
         + (f", study from {results['started_at']} to {results.get('updated_at', '?')}" if results.get("started_at") else "")
         + f"; the last invocation {_duration(results['seconds'])} (finished runs are reused)."
         + (f" Code: commit {results['commit']}." if results.get("commit") else "") + status),
    ]


RULE = [
    "## How comparisons are decided",
    "",
    ("Every comparison is paired: variant a against variant b seed by seed, at the same budget and context "
     "(the runs of one seed share the router init, the noise and the data order). Each table shows a − b "
     "(perplexity; negative: a is lower) in every seed, with its sign and size. The rule "
     "(`benchmarks/reproduce/paired.py`, `tie_rule`): **an effect is called only when a − b has the same sign "
     "in every seed (at least 2) and every |a − b| is larger than the spread of repeated identical runs**: "
     "the |perplexity difference| between the recipe run and the same run (same seed) trained on another "
     "data order (`data.order_seed`). A sign that differs between seeds is a tie; so is a same-sign "
     "difference inside the spread. The spread measured on the recipe stands for every route (the others "
     "are not repeated)."),
    "",
    ("Sizes: two sub-models are compared directly only when their parameter counts are equal (\"same spec\"). "
     "Otherwise each route gets a size curve per seed, log(ppl) = a + b·log(param_ratio), fitted by least "
     "squares over that route's budgets (1, 0.75, 0.5 of an elastic run; one run per size for the Minitron "
     "and scratch routes), and the two routes are read at the budget's nominal size (0.75x, 0.5x). A size "
     "outside the sizes either curve was fitted on is refused. On the curves the spread is the distance "
     "between the curve of the recipe run and that of its repeat at the same size."),
    "",
    ("When the JSON has no repeated run (studies before the spread runs existed), the spread is unmeasured: "
     "a comparison whose sign agrees in every seed is reported as \"not called\", never as an effect."),
    "",
]


def render(results: dict, figures: dict[str, str]) -> str:
    plan = results["plan"]
    ctx, long_ctx = str(plan["seq_len"]), str(plan["long_seq"])
    ctxs = [ctx, long_ctx]
    family = [pr.compare(results, "elastic", r, b, ctx) for r in ROUTES for b in SUB_LABELS
              if pr.series(results, r, b, ctx)]
    parent_cmp = pr.compare_to_parent(results, "elastic", ctx)
    lines = [
        "# Results: the paper's claims at small scale",
        "",
        ("Generated by `python benchmarks/reproduce/run.py --parent ...` (`make reproduce`) from "
         "`benchmarks/results/reproduce.json` (`run.py --report-only` regenerates it from the JSON alone); do "
         "not edit by hand."),
        "",
        *_header(results, ctx, long_ctx),
        "",
        *RULE,
        "### The spread of repeated runs",
        "",
        *_spread_table(results, ctxs),
        "",
        "## Family cost (paper Table 2)",
        "",
        (f"Held-out perplexity at {ctx} tokens of context (size in brackets). The elastic run produces all three "
         "models at once; the Minitron route distils the same pruned architectures (each seed's router specs) "
         "one at a time, with T or T/2 tokens each; from scratch trains those architectures from random init."),
        "",
        *_family_table(results, ctx),
        "",
        "Paired: a = elastic, b = the route (same spec in every seed).",
        "",
        *(_paired_table(family, "elastic lower", "elastic higher") if family else ["No route runs."]),
        "",
        "The full model against the parent it started from (a = elastic budget 1, b = the parent):",
        "",
        *(_paired_table([parent_cmp], "elastic lower", "elastic higher") if parent_cmp.rows else ["-"]),
        "",
        f"![loss against tokens]({figures['curves']})",
        "",
        "## Deployment memory (paper Table 3)",
        "",
        *_memory_table(results),
        "",
        "## Stage 2 versus stage 1 only (paper Table 4) and stage-2 sampling (paper Table 5)",
        "",
        "Same tokens in every run; stage 1 only trains all steps at the short context with uniform budgets.",
        "",
        *_variant_table(results, [("elastic", "recipe: stage 1 + stage 2 weighted 0.5/0.3/0.2"),
                                  ("stage1only", "stage 1 only"), ("stage2uniform", "stage 2 uniform")], ctxs),
        "",
        "Paired, a = recipe, b = stage 1 only:",
        "",
        *_paired_table(pr.compare_runs(results, "elastic", "stage1only", BUDGET_LABELS, ctxs),
                       "recipe lower", "recipe higher"),
        "",
        "Paired, a = recipe (weighted stage 2), b = stage 2 uniform:",
        "",
        *_paired_table(pr.compare_runs(results, "elastic", "stage2uniform", BUDGET_LABELS, [ctx]),
                       "recipe lower", "recipe higher"),
        "",
        "## Ablations the paper does not report",
        "",
        ("Router-chosen specs versus fixed common-ratio specs (hidden, MLP and Mamba heads shrunk alike, no "
         "layer dropped) with at most the router spec's parameters, trained the same way; one MLP size for "
         "every layer versus per-layer MLP menus. Budget 1 is the full model on both sides, so these are "
         "decided on budgets below 1 only."),
        "",
        *_variant_table(results, [("elastic", "recipe (router, per-layer MLP menu)"),
                                  ("uniformspecs", "fixed common-ratio specs"),
                                  ("homogeneous", "router, one MLP size for all layers")], [ctx]),
        "",
        "Paired, a = recipe, b = common-ratio specs:",
        "",
        *_paired_table(pr.compare_runs(results, "elastic", "uniformspecs", SUB_LABELS, [ctx]),
                       "router lower", "router higher"),
        "",
        "Paired, a = recipe (per-layer MLP menus), b = one MLP size for all layers:",
        "",
        *_paired_table(pr.compare_runs(results, "elastic", "homogeneous", SUB_LABELS, [ctx]),
                       "per-layer lower", "per-layer higher"),
        "",
        f"Size curves at {ctx} tokens of context (log ppl = a + b·log(param_ratio)):",
        "",
        *_curve_table(results, ["elastic", "uniformspecs", "homogeneous", "stage1only", "stage2uniform"], ctx),
        "",
        f"![perplexity per variant]({figures['variants']})",
        "",
        "Depth ranking, zero shot (no training): the scored parent with its least important layers dropped.",
        "",
        *_depth_table(results),
        "",
        "## Training checks",
        "",
        ("Where each budget's router decision landed, and the held-out KD loss (to the parent) of that "
         "sub-model cut from the parent before training versus after training. Decisions are taken within "
         "the budget (the default `router.decision: within_budget`: the router's best-scoring sub-model "
         "whose cost is within 5% of the budget); the router's own row-wise argmax (the paper's rule) is "
         "shown next to it. A budget whose decision is "
         "the full model starts at KD 0 exactly (it is the parent), so it cannot go lower. The last two "
         "columns follow the router's decision during training (its parameter ratio in brackets)."),
        "",
        *_training_checks(results),
        "",
        "## Reading",
        "",
        ("Each claim with the rule that decides it and the numbers behind it. A claim of the form \"a matches "
         "b\" holds when no comparison calls a worse and every comparison is decided; \"a beats b\" holds when "
         "some comparison calls a better and none calls it worse."),
        "",
        *_reading(results, ctx, long_ctx),
        "",
    ]
    return "\n".join(lines)


def write_results(results: dict[str, Any], json_path: Path | None, doc_path: Path) -> list[Path]:
    """results JSON (unless `json_path` is None), the plots next to the doc (in `results/`) and the doc; each
    written atomically."""
    import json

    from plots import plot_curves, plot_variants

    written = []
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = json_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        tmp.replace(json_path)
        written.append(json_path)
    fig_dir = doc_path.parent / "results"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures = {"curves": "results/reproduce_curves.png", "variants": "results/reproduce_variants.png"}
    plot_curves(results, doc_path.parent / figures["curves"])
    plot_variants(results, str(results["plan"]["seq_len"]), doc_path.parent / figures["variants"])
    tmp = doc_path.with_suffix(".tmp")
    tmp.write_text(render(results, figures))
    tmp.replace(doc_path)
    return written + [doc_path]
