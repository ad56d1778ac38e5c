# SPDX-License-Identifier: Apache-2.0
"""The embedded default, end to end (`nemotron-elastic demo`, what `make demo` runs).

    1. pretrain   a small hybrid parent (tiny-hybrid, M-M*M-M-) on the packaged default corpus
    2. score      width + depth importance; the parent reordered so every sub-model is a prefix
    3. train      router + multi-budget KD for budgets 1.0 / 0.75 / 0.5, stage 1 then stage 2
    4. export     each budget as a standard HF checkpoint
    5. evaluate   held-out perplexity, parameters and tokens/s per budget, next to the same specs sliced
                  from the parent before elastic training
    6. report     <out>/report.md with a table and plots (loss per budget, perplexity vs parameters)

Every step writes its own folder and is skipped when that folder is complete, so a second run reuses
finished work. Steps 2, 4 (its check) and 5 run on `device` in `dtype`; the trainers of steps 1 and 3 pick
their own device (CUDA when available). `--quick` runs the same pipeline on a micro model in about a minute (the test suite runs it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint.elastic import budget_spec
from .checkpoint.load import load_model
from .config.run import PretrainConfig, TrainConfig
from .config.types import from_dict
from .data.calibration import default_calibration_file
from .data.corpus import default_corpus
from .eval.runner import EvalSettings, evaluate_model
from .export import export_subnet
from .importance.pipeline import score_model
from .io import import_extra, write_json, write_text
from .train.elastic import ElasticTrainer
from .train.pretrain import PretrainTrainer
from .train.run_dir import read_metrics

MARKER = "demo-run.json"  # marks a folder as a demo run (so an unrelated folder is never reused)


@dataclass
class DemoPlan:
    """Sizes of one demo run."""

    preset: str
    vocab: int
    pretrain_steps: int
    pretrain_seq: int
    pretrain_batch: int
    train_docs: int | None  # None: the whole default corpus
    score_samples: int
    score_seq: int
    stage1_steps: int
    stage2_steps: int
    seq_len: int
    eval_tokens: int


FULL = DemoPlan("tiny-hybrid", 4096, 600, 256, 8, None, 32, 256, 150, 60, 256, 16384)
QUICK = DemoPlan("micro-hybrid", 512, 40, 64, 8, 120, 8, 64, 8, 4, 64, 2048)


def _check_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise FileExistsError(f"{out}: folder exists and is not a previous demo run (choose another --out)")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"kind": "nemotron-elastic demo"}) + "\n")


def _data_files(out: Path, plan: DemoPlan) -> tuple[str | None, str | None]:
    """(train, heldout) paths for the run configs; None means the default corpus itself."""
    if plan.train_docs is None:
        return None, None

    folder = out / "data"
    folder.mkdir(parents=True, exist_ok=True)
    train, held = folder / "train.jsonl", folder / "heldout.jsonl"
    if not held.is_file():
        for path, docs in ((train, default_corpus("train")[-plan.train_docs:]), (held, default_corpus("heldout")[-40:])):
            write_text(path, "".join(json.dumps({"text": d}) + "\n" for d in docs))
    return str(train), str(held)


def _step(name: str, done: bool, timings: dict[str, Any], fn) -> None:
    start = time.perf_counter()
    if done:
        timings[name] = "reused"
        print(f"[demo] {name}: reusing the finished step")
        return
    print(f"[demo] {name} ...")
    fn()
    timings[name] = round(time.perf_counter() - start, 1)


def run_demo(
    out: str | Path = "runs/demo", quick: bool = False, progress: bool = True, device: Any = "cpu", dtype: Any = None
) -> dict[str, Any]:
    """Run (or resume) the whole pipeline; returns the report's numbers and writes <out>/report.md.

    `device` / `dtype` (a torch.device or string, a torch.dtype or None for as stored) are those of the
    score, export-check and evaluation steps.
    """
    out, plan = Path(out), (QUICK if quick else FULL)
    import_extra("matplotlib", "the demo's report")  # checked first: not after half an hour of training
    _check_out(out)
    train_file, held_file = _data_files(out, plan)
    data = {"train": train_file, "heldout": held_file, "eval_tokens": plan.eval_tokens, "workdir": str(out / "data" / "tokens")}
    timings: dict[str, Any] = {}
    parent, scored, elastic = out / "parent" / "model", out / "scored", out / "elastic" / "model"

    def pretrain() -> None:
        cfg = from_dict(PretrainConfig, {
            "preset": plan.preset, "model": {"vocab_size": plan.vocab}, "out": str(out / "parent"), "data": data,
            "optim": {"lr": 3e-3, "warmup_steps": min(50, plan.pretrain_steps // 5), "weight_decay": 0.1},
            "stages": [{"name": "pretrain", "steps": plan.pretrain_steps, "seq_len": plan.pretrain_seq,
                        "micro_batch": plan.pretrain_batch, "grad_accum": 1}],
            "log_every": max(1, plan.pretrain_steps // 30), "eval_every": plan.pretrain_steps,
            "save_every": max(1, plan.pretrain_steps // 3),
        })
        PretrainTrainer(cfg, resume=(out / "parent" / "train_config.yaml").is_file(), progress=progress).fit()

    def score() -> None:
        calib = train_file or str(default_calibration_file(out / "data" / "calibration.jsonl"))
        score_model(parent, calib, scored, samples=plan.score_samples, seq_len=plan.score_seq,
                    depth_samples=4, depth_seq_len=plan.score_seq // 2, max_depth_drops=3, progress=progress,
                    overwrite=True, device=device, dtype=dtype)

    def train() -> None:
        cfg = from_dict(TrainConfig, {
            "parent": str(scored), "out": str(out / "elastic"), "budgets": [1.0, 0.75, 0.5],
            "menus": {"hidden": [1.0, 0.875, 0.75, 0.625, 0.5], "mlp": [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25],
                      "mamba_heads": [1.0, 0.75, 0.5], "depth": [0, 1, 2], "per_layer": ["mlp"]},
            "optim": {"lr": 5e-4, "warmup_steps": max(1, plan.stage1_steps // 10)},
            "stages": [
                {"name": "stage1", "steps": plan.stage1_steps, "seq_len": plan.seq_len, "micro_batch": 4, "grad_accum": 3},
                {"name": "stage2", "steps": plan.stage2_steps, "seq_len": 2 * plan.seq_len, "micro_batch": 2,
                 "grad_accum": 3, "budget_weights": [0.5, 0.3, 0.2]},
            ],
            "data": data, "log_every": max(1, plan.stage1_steps // 15),
            "eval_every": max(1, (plan.stage1_steps + plan.stage2_steps) // 4),
            "save_every": max(1, (plan.stage1_steps + plan.stage2_steps) // 4),
        })
        ElasticTrainer(cfg, resume=(out / "elastic" / "train_config.yaml").is_file(), progress=progress).fit()

    _step("pretrain", (parent / "config.yaml").is_file(), timings, pretrain)
    _step("score", (scored / "ranking.json").is_file(), timings, score)
    _step("train", (elastic / "budgets.json").is_file(), timings, train)
    return evaluate_and_report(out, plan, parent, scored, elastic, held_file, timings, progress, device, dtype)


# --- report -------------------------------------------------------------------------------------------
# The demo's last steps: export every budget, evaluate it next to the same spec sliced from the parent
# before elastic training, and write `report.md` + `report.json` + plots. Every number comes from this run.

BUDGETS = (1.0, 0.75, 0.5)


def _plot_losses(metrics: Path, path: Path) -> None:
    matplotlib = import_extra("matplotlib", "the demo's report")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    matplotlib = import_extra("matplotlib", "the demo's report")
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
                        timings: dict[str, Any], progress: bool, device: Any = "cpu", dtype: Any = None) -> dict[str, Any]:
    start = time.perf_counter()
    for b in BUDGETS:
        dest = out / "exports" / f"budget-{b:g}"
        if not (dest / "config.json").is_file():
            export_subnet(elastic, dest, budget=b, fmt="auto", overwrite=True, device=device, dtype=dtype)
    timings["export"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    dtype_name = None if dtype is None else str(dtype).removeprefix("torch.")
    settings = EvalSettings(seq_len=plan.seq_len, max_tokens=plan.eval_tokens, batch_size=8, dtype=dtype_name,
                            device=str(device))
    result = evaluate_model(elastic, budgets=list(BUDGETS), data=held_file, settings=settings, progress=progress)
    rows = []
    for row in result["rows"]:
        rows.append({"kind": "elastic", "budget": row.get("budget"), "params": row["params"],
                     "perplexity": row["perplexity"], "bits_per_byte": row["bits_per_byte"],
                     "tokens_per_second": row["tokens_per_second"], "memory_bytes": row["memory_bytes"]["total"]})
    config = None
    for b in BUDGETS:
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
    write_json(out / "report.json", report)
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
    write_text(out / "report.md", "\n".join(lines) + "\n")
