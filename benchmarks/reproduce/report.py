# SPDX-License-Identifier: Apache-2.0
"""docs/RESULTS.md and its plots from the study's results dict (`run.py`); every number is read from it.

The reading at the end is generated too: each claim is stated with the numbers that decide it, and a
difference smaller than the spread over seeds is called a tie.
"""

from __future__ import annotations

import json
import platform
import statistics
from pathlib import Path
from typing import Any

BUDGET_LABELS = ("1", "0.75", "0.5")


def _values(results: dict, variant: str, label: str, ctx: str, key: str = "perplexity") -> list[float]:
    return [r["eval"][ctx][label][key] for r in results["runs"].values()
            if r["variant"] == variant and label in r["eval"].get(ctx, {})]


def _stat(values: list[float]) -> tuple[float, float] | None:
    """(mean, half the range): with two seeds, the distance from the mean to either seed."""
    if not values:
        return None
    return statistics.fmean(values), (max(values) - min(values)) / 2


def _fmt(stat: tuple[float, float] | None, n: int) -> str:
    if stat is None:
        return "-"
    return f"{stat[0]:.2f}" if n < 2 else f"{stat[0]:.2f} ± {stat[1]:.2f}"


def _cell(results: dict, variant: str, label: str, ctx: str, size: bool = False) -> str:
    """Mean perplexity (± half the range over seeds); with `size`, the mean parameter ratio in brackets."""
    vals = _values(results, variant, label, ctx)
    text = _fmt(_stat(vals), len(vals))
    if size and vals:
        text += f" ({statistics.fmean(_values(results, variant, label, ctx, 'param_ratio')):.2f}x)"
    return text


def _ratio(results: dict, variant: str, label: str, ctx: str) -> float | None:
    vals = _values(results, variant, label, ctx, "param_ratio")
    return statistics.fmean(vals) if vals else None


def _compare(results: dict, a: str, b: str, label: str, ctx: str) -> tuple[str, float, float] | None:
    """('lower' | 'higher' | 'tie', mean a, mean b) for perplexity of variant a versus b."""
    sa, sb = _stat(_values(results, a, label, ctx)), _stat(_values(results, b, label, ctx))
    if sa is None or sb is None:
        return None
    if abs(sa[0] - sb[0]) <= sa[1] + sb[1]:
        return "tie", sa[0], sb[0]
    return ("lower" if sa[0] < sb[0] else "higher"), sa[0], sb[0]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _variant_table(results: dict, variants: list[tuple[str, str]], ctxs: list[str]) -> list[str]:
    header = ["run"] + [f"ppl {b} @ {c}" for c in ctxs for b in BUDGET_LABELS]
    return _table(header, [[name] + [_cell(results, v, b, c, size=True) for c in ctxs for b in BUDGET_LABELS]
                           for v, name in variants])


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _millions(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


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


def _reading(results: dict, ctx: str, long_ctx: str) -> list[str]:
    out = []

    def say(claim: str, verdict: str, detail: str) -> None:
        out.append(f"- **{claim}**: {verdict}. {detail}")

    T = results["plan"]["tokens"]
    for b in BUDGET_LABELS[1:]:  # per seed: each run's own spec, cut from the parent before vs after training
        rows = [(n, r["budgets"]["before_training_eval"][b], r["budgets"]["final_eval"][b])
                for n, r in results["runs"].items() if r["variant"] == "elastic"]
        if rows:
            closer = all(after["kd"] < before["kd"] for _, before, after in rows)
            better = all(after["ppl"] < before["ppl"] for _, before, after in rows)
            say(f"Elastic training brings the {b} sub-model closer to the parent (held-out KD of each run's spec, "
                "cut from the parent before training versus after)", "held" if closer else "did not hold",
                "KD / perplexity on the training-time held-out tokens: "
                + "; ".join(f"{n}: {x['kd']:.3f} / {x['ppl']:.2f} -> {y['kd']:.3f} / {y['ppl']:.2f}"
                            for n, x, y in rows)
                + ("." if better else "; perplexity did not improve in every run (the full model drifts too)."))
    first = f"elastic-s{results['plan']['seeds'][0]}"
    for b in BUDGET_LABELS[1:]:  # the Minitron and scratch models have the first seed's specs: compare with it
        e = results["runs"][first]["eval"][ctx][b]["perplexity"] if first in results["runs"] else None
        m, z = (results["runs"].get(f"{v}-{b}") for v in ("minitron", "scratch"))
        if e is not None and m is not None:
            mp = m["eval"][ctx][b]["perplexity"]
            say(f"Elastic matches the Minitron route at {b} for half the tokens ({_millions(T)} for the whole "
                f"family vs {_millions(2 * T)})", "held" if e <= mp * 1.01 else "did not hold",
                f"Same architecture, one seed: perplexity {e:.2f} ({first}) vs {mp:.2f} (Minitron, "
                f"{100 * (e / mp - 1):+.1f}%).")
        if e is not None and z is not None:
            zp = z["eval"][ctx][b]["perplexity"]
            say(f"Elastic beats training the {b} model from scratch on T tokens (the elastic run spent T on all "
                "three)", "held" if e < zp else "did not hold", f"Perplexity {e:.2f} ({first}) vs {zp:.2f}.")
    for variant, claim, ctxs in (
        ("stage1only", "Stage 2 (long context, full-model-weighted) improves on stage 1 alone (Table 4)", (ctx, long_ctx)),
        ("stage2uniform", "Weighted stage-2 sampling beats uniform (Table 5)", (ctx,)),
        ("uniformspecs", "Router-chosen specs beat common-ratio specs of the same cost", (ctx,)),
        ("homogeneous", "Per-layer MLP menus beat one MLP size for all layers", (ctx,)),
    ):
        parts, wins, losses = [], 0, 0
        for c_ in ctxs:
            for b in BUDGET_LABELS:
                c = _compare(results, "elastic", variant, b, c_)
                if c is None:
                    continue
                ra, rb = _ratio(results, "elastic", b, c_), _ratio(results, variant, b, c_)
                if abs(ra - rb) > 0.02:  # different sizes: perplexity alone does not decide
                    parts.append(f"{b}@{c_}: {c[1]:.2f} at {ra:.2f}x vs {c[2]:.2f} at {rb:.2f}x (sizes differ)")
                    continue
                wins += c[0] == "lower"
                losses += c[0] == "higher"
                parts.append(f"{b}@{c_}: {c[1]:.2f} vs {c[2]:.2f} ({c[0]})")
        if parts:
            verdict = "held" if wins and not losses else ("did not hold" if losses and not wins else "mixed")
            if not wins and not losses:
                verdict = "not shown (ties within the seed spread, or sub-models of different sizes)"
            say(claim, verdict, "Recipe vs variant: " + "; ".join(parts) + ".")
    depth = results["depth"]
    parts, wins, losses = [], 0, 0
    for k in depth["nmse"]["cut"]:
        a, b = depth["nmse"]["cut"][k]["perplexity"], depth["block_importance"]["cut"][k]["perplexity"]
        same = depth["nmse"]["dropped"][k] == depth["block_importance"]["dropped"][k]
        wins += a < b and not same
        losses += a > b and not same
        parts.append(f"drop {k}: {a:.2f} vs {b:.2f}" + (" (same layers)" if same else ""))
    verdict = "held" if wins and not losses else ("did not hold" if losses and not wins else
                                                  ("mixed" if wins else "a tie (the same layers)"))
    say("Normalized-MSE depth ranking beats Block Importance (zero shot)", verdict, "; ".join(parts) + ".")
    mem = results["memory"]
    say("One elastic checkpoint serves the family for the memory of its largest model (Table 3)", "held",
        f"{mem['elastic_bytes'] / 1e6:.1f} MB vs {mem['separate_bytes'] / 1e6:.1f} MB for separate checkpoints "
        f"({mem['separate_over_elastic']:.2f}x).")
    return out


def _memory_table(results: dict) -> list[str]:
    mem = results["memory"]
    rows = [[f"separate checkpoint {b}", f"{v['params'] / 1e6:.2f}M", f"{v['bytes'] / 1e6:.1f} MB"]
            for b, v in mem["separate"].items()]
    rows.append(["**separate, all**", f"{mem['params_separate'] / 1e6:.2f}M", f"{mem['separate_bytes'] / 1e6:.1f} MB"])
    rows.append(["**one elastic checkpoint** (weights + router)", f"{mem['params_elastic'] / 1e6:.2f}M",
                 f"{mem['elastic_bytes'] / 1e6:.1f} MB"])
    return _table(["family", "parameters", "weights on disk"], rows)


def _run_cell(results: dict, name: str, label: str, ctx: str) -> str:
    row = results["runs"].get(name, {}).get("eval", {}).get(ctx, {}).get(label)
    return "-" if row is None else f"{row['perplexity']:.2f} ({row['param_ratio']:.2f}x)"


def _family_table(results: dict, ctx: str) -> list[str]:
    T = results["plan"]["tokens"]
    first = results["plan"]["seeds"][0]
    n = len(_values(results, "elastic", "0.5", ctx))
    rows = [
        [f"parent, seed-{first} specs cut before training", "0", "yes"] + [_cell(results, "before", b, ctx, True) for b in BUDGET_LABELS],
        [f"**elastic** (one run, {n} seed{'s' if n > 1 else ''})", _millions(T), "yes"]
        + [_cell(results, "elastic", b, ctx, True) for b in BUDGET_LABELS],
        [f"elastic, seed {first} only (the architectures of the rows below)", _millions(T), "yes"]
        + [_run_cell(results, f"elastic-s{first}", b, ctx) for b in BUDGET_LABELS],
        ["Minitron route (prune, distil each size)", _millions(2 * T), "yes", "-"]
        + [_cell(results, "minitron", b, ctx, True) for b in BUDGET_LABELS[1:]],
        ["from scratch (each size)", _millions(2 * T), "no", "-"]
        + [_cell(results, "scratch", b, ctx, True) for b in BUDGET_LABELS[1:]],
    ]
    return _table(["route", "tokens for the 0.75 + 0.5 models", "uses the parent"]
                  + [f"ppl {b}" for b in BUDGET_LABELS], rows)


def _depth_table(results: dict) -> list[str]:
    d = results["depth"]
    rows = [[k, str(d["nmse"]["dropped"][k]), f"{d['nmse']['cut'][k]['perplexity']:.2f}",
             str(d["block_importance"]["dropped"][k]), f"{d['block_importance']['cut'][k]['perplexity']:.2f}"]
            for k in d["nmse"]["cut"]]
    return _table(["layers dropped", "nMSE drops", "ppl", "Block Importance drops", "ppl"], rows)


def render(results: dict, figures: dict[str, str]) -> str:
    plan = results["plan"]
    ctx, long_ctx = str(plan["seq_len"]), str(plan["long_seq"])
    seeds = ", ".join(str(s) for s in plan["seeds"])
    parent_tokens = results.get("parent_tokens")
    lines = [
        "# Results: the paper's claims at small scale",
        "",
        ("Generated by `python benchmarks/reproduce/run.py --parent ...` (`make reproduce`) from "
        "`benchmarks/results/reproduce.json`; do not edit by hand."),
        "",
        f"- Parent: `{Path(results['parent']).as_posix()}`, {results['parent_params'] / 1e6:.2f}M parameters"
        + (f", pretrained on {_millions(parent_tokens)} tokens" if parent_tokens else "") + ".",
        (f"- Every training run: {_millions(plan['tokens'])} tokens (T): {plan['stage1_steps']} stage-1 steps at "
        f"{plan['seq_len']} tokens of context, then {plan['stage2_steps']} stage-2 steps at {2 * plan['seq_len']}, "
        f"{plan['micro_batch'] * plan['grad_accum'] * plan['seq_len']} tokens per step; model LR {plan['lr']:g}."),
        (f"- Elastic variants: seeds {seeds} (mean ± half the range). Minitron and from-scratch runs: seed "
        f"{plan['seeds'][0]}."),
        (f"- Held-out data: the default corpus' held-out split, {plan['eval_tokens']} tokens, perplexity at "
        f"{ctx} and {long_ctx} tokens of context."),
        (f"- Machine: {platform.machine()}, {platform.processor() or 'CPU'}; training took "
         f"{_duration(sum(r.get('train_seconds') or 0 for r in results['runs'].values()))} in all, the last "
         f"invocation {_duration(results['seconds'])} (runs finished earlier are reused)."),
        "",
        "## Family cost (paper Table 2)",
        "",
        (f"Held-out perplexity at {ctx} tokens of context. The elastic run produces all three models at once; "
        "the Minitron route distils the same pruned architectures one at a time; from scratch trains those "
        "architectures from random init."),
        "",
        *_family_table(results, ctx),
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
                                  ("stage1only", "stage 1 only"), ("stage2uniform", "stage 2 uniform")],
                        [ctx, long_ctx]),
        "",
        "## Ablations the paper does not report",
        "",
        ("Router-chosen specs versus fixed common-ratio specs (hidden, MLP and Mamba heads shrunk alike, no "
        "layer dropped) with at most the router spec's parameters, trained the same way; one MLP size for "
        "every layer versus per-layer MLP menus."),
        "",
        *_variant_table(results, [("elastic", "recipe (router, per-layer MLP menu)"),
                                  ("uniformspecs", "fixed common-ratio specs"),
                                  ("homogeneous", "router, one MLP size for all layers")], [ctx]),
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
        *_reading(results, ctx, long_ctx),
        "",
    ]
    return "\n".join(lines)


def write_results(results: dict[str, Any], json_path: Path, doc_path: Path) -> list[Path]:
    """results JSON, the plots next to the doc (in `results/`) and the doc; each written atomically."""
    from plots import plot_curves, plot_variants

    json_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = json_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(json_path)
    fig_dir = doc_path.parent / "results"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures = {"curves": "results/reproduce_curves.png", "variants": "results/reproduce_variants.png"}
    plot_curves(results, doc_path.parent / figures["curves"])
    plot_variants(results, str(results["plan"]["seq_len"]), doc_path.parent / figures["variants"])
    tmp = doc_path.with_suffix(".tmp")
    tmp.write_text(render(results, figures))
    tmp.replace(doc_path)
    return [json_path, doc_path]
