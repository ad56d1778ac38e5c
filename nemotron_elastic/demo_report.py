# SPDX-License-Identifier: Apache-2.0
"""The demo's last steps: export every budget, evaluate it next to the same spec sliced from the parent
before elastic training, and write `report.md` + `report.json` + plots. Every number comes from this run."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

BUDGETS = (1.0, 0.75, 0.5)


def _plot_losses(metrics: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .train.metrics import read_metrics

    rows = [r for r in read_metrics(metrics) if r["split"] == "train"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for b in BUDGETS:
        key = f"{b:g}/kd"
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            ax.plot(*zip(*points), marker=".", label=f"budget {b:g}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train KD loss (forward KL)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Elastic training: KD loss per budget")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_quality(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, marker in (("elastic", "o"), ("sliced before training", "x")):
        pts = sorted((r["params"], r["perplexity"]) for r in rows if r["kind"] == kind)
        if pts:
            ax.plot(*zip(*pts), marker=marker, label=kind)
    ax.set_xlabel("parameters")
    ax.set_ylabel("held-out perplexity")
    ax.legend()
    ax.set_title("Perplexity vs parameters")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate_and_report(out: Path, plan: Any, parent: Path, scored: Path, elastic: Path, held_file: str | None,
                        timings: dict[str, Any], progress: bool) -> dict[str, Any]:
    from .eval.runner import EvalSettings, evaluate_model
    from .export.subnet_export import export_subnet
    from .train.elastic_checkpoint import budget_spec

    start = time.perf_counter()
    for b in BUDGETS:
        dest = out / "exports" / f"budget-{b:g}"
        if not (dest / "config.json").is_file():
            export_subnet(elastic, dest, budget=b, fmt="hf", overwrite=True)
    timings["export"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    settings = EvalSettings(seq_len=plan.seq_len, max_tokens=plan.eval_tokens, batch_size=8)
    result = evaluate_model(elastic, budgets=list(BUDGETS), data=held_file, settings=settings, progress=progress)
    rows = []
    for row in result["rows"]:
        rows.append({"kind": "elastic", "budget": row.get("budget"), "params": row["params"],
                     "perplexity": row["perplexity"], "bits_per_byte": row["bits_per_byte"],
                     "tokens_per_second": row["tokens_per_second"], "memory_bytes": row["memory_bytes"]["total"]})
    config = None
    for b in BUDGETS:
        from .checkpoint import load_model

        config = config or load_model(elastic).config
        spec = budget_spec(elastic, b, config)
        before = evaluate_model(scored, spec=spec.to_dict(), data=held_file, settings=settings)["rows"][0]
        rows.append({"kind": "sliced before training", "budget": b, "params": before["params"],
                     "perplexity": before["perplexity"], "bits_per_byte": before["bits_per_byte"],
                     "tokens_per_second": before["tokens_per_second"], "memory_bytes": before["memory_bytes"]["total"],
                     "spec": spec.to_dict()})
    timings["evaluate"] = round(time.perf_counter() - start, 1)

    _plot_losses(out / "elastic" / "metrics.jsonl", out / "loss_per_budget.png")
    _plot_quality(rows, out / "perplexity_vs_params.png")
    report = {"plan": plan.__dict__, "timings_s": timings, "rows": rows, "data": result["data"]}
    tmp = out / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(out / "report.json")
    _write_markdown(out, report)
    return report


def _write_markdown(out: Path, report: dict[str, Any]) -> None:
    by = {(r["kind"], r["budget"]): r for r in report["rows"]}
    lines = [
        "# nemotron-elastic demo report",
        "",
        f"Parent: `{report['plan']['preset']}` pretrained here for {report['plan']['pretrain_steps']} steps; "
        f"elastic training: {report['plan']['stage1_steps']} + {report['plan']['stage2_steps']} steps "
        "(stage 1 uniform budgets, stage 2 weighted 0.5 / 0.3 / 0.2).",
        f"Held-out data: {report['data']['source']} ({report['data']['tokens']} tokens).",
        "",
        "| budget | params | elastic ppl | sliced-before ppl | elastic bits/byte | tokens/s |",
        "|---|---|---|---|---|---|",
    ]
    for b in BUDGETS:
        e, s = by.get(("elastic", b)), by.get(("sliced before training", b))
        if e is None:
            continue
        lines.append(f"| {b:g} | {e['params']:,} | {e['perplexity']:.2f} | {s['perplexity']:.2f} | "
                     f"{e['bits_per_byte']:.3f} | {e['tokens_per_second']:.0f} |")
    lines += [
        "",
        "![KD loss per budget](loss_per_budget.png)",
        "",
        "![perplexity vs parameters](perplexity_vs_params.png)",
        "",
        "Step times (seconds; `reused` = finished in an earlier run): "
        + ", ".join(f"{k} {v}" for k, v in report["timings_s"].items()),
        "",
        "Every number above was produced by this run (`report.json` has them all).",
    ]
    tmp = out / "report.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out / "report.md")
