# SPDX-License-Identifier: Apache-2.0
"""The claims table of docs/RESULTS.md ("Reading"): each claim of the paper with the rule that decides it and
the numbers behind it. Every verdict is computed from the results dict by `paired.py`; file-size facts are
labelled arithmetic, the zero-shot depth comparison a single measurement."""

from __future__ import annotations

import curves as cv
import paired as pr
from tables import BUDGET_LABELS, SUB_LABELS, brief, md_table, millions

# --- claims ----------------------------------------------------------------------------------------------------


def no_worse(verdicts: list[pr.Verdict]) -> pr.Verdict:
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


def claims(results: dict, ctx: str, long_ctx: str) -> list[list[str]]:
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
                pr.claim_verdict([c.verdict]), brief(c, 3))
    c = pr.compare_to_parent(results, "elastic", ctx)
    if c.rows:
        v = c.verdict
        if v.status == pr.CALLED:
            verdict = (pr.Verdict("did not hold", 1, "worse than the parent in every seed, beyond the spread")
                       if v.effect > 0 else pr.Verdict("held", -1, "better than the parent in every seed"))
        else:
            verdict = pr.Verdict("held" if v.status == pr.TIE else "not decided", 0, f"{v.status}: {v.reason}")
        add("The full model keeps the parent's quality (elastic budget 1 vs the parent)", paired, verdict, brief(c))
    for route, claim in (
        ("minitron", (f"Elastic matches the Minitron route for half the tokens ({millions(T)} for the family vs "
                     f"{millions(2 * T)}: T per Minitron model)")),
        ("minitronhalf", (f"Elastic matches the Minitron route at equal total tokens ({millions(T)} each: T/2 per "
                         "Minitron model)")),
    ):
        comps = [pr.compare(results, "elastic", route, b, ctx) for b in SUB_LABELS
                 if cv.series(results, route, b, ctx)]
        if comps:
            add(claim, paired + " (same spec: each seed's router specs)", no_worse([x.verdict for x in comps]),
                "; ".join(brief(x) for x in comps))
        else:
            add(claim, paired, pr.Verdict("not measured", 0, ""),
                f"No `{route}` runs in this JSON (the study's plan trains `{route}-<budget>-s<seed>`).")
    comps = [pr.compare(results, "elastic", "scratch", b, ctx) for b in SUB_LABELS
             if cv.series(results, "scratch", b, ctx)]
    if comps:
        add("Elastic beats training each model from scratch on T tokens (the elastic run spent T on all three)",
            paired, pr.claim_verdict(x.verdict for x in comps), "; ".join(brief(x) for x in comps))
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
                "; ".join(brief(x) for x in comps))
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


def reading(results: dict, ctx: str, long_ctx: str) -> list[str]:
    """The claims table (kept under the old name: the doc's "Reading")."""
    return md_table(["claim", "decided by", "verdict", "evidence (a − b per seed → verdict)"],
                  claims(results, ctx, long_ctx))
