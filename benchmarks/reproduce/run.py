# SPDX-License-Identifier: Apache-2.0
"""The paper's claims measured at small scale: one command, every number from the run.

    python benchmarks/reproduce/run.py --parent runs/parent/model [--out runs/reproduce]

From one pretrained parent (native or HF folder with its tokenizer; `make reproduce` pretrains the
tiny-hybrid first) it scores the parent, trains the runs listed in `experiments.py` (a finished run is
reused, so an interrupted study continues where it stopped), evaluates every model on the default corpus'
held-out split at the training context and at a long one, and writes

    benchmarks/results/reproduce.json     every number
    docs/RESULTS.md, docs/results/*.png   the tables, plots and a reading generated from those numbers

`--quick` runs the same study with a few steps on whatever parent it is given (the test suite uses it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

import experiments as ex
from measure import depth_rankings, evaluate_run, family_memory, learning_curve, router_argmax_ratios

QUICK = ex.Plan(stage1_steps=2, stage2_steps=1, seq_len=32, micro_batch=2, grad_accum=1, eval_tokens=256,
                train_eval_tokens=128, long_seq=64, score_samples=4, seeds=(0,))


def _log(msg: str) -> None:
    print(f"[reproduce] {time.strftime('%H:%M:%S')} {msg}", flush=True)


def _calibration(out: Path) -> Path:
    from nemotron_elastic.data.calibration import default_calibration_file

    return default_calibration_file(out / "calibration.jsonl")


def _scored(parent: Path, out: Path, plan: ex.Plan, progress: bool) -> Path:
    if (parent / "ranking.json").is_file():
        return parent
    scored = out / "scored"
    if not (scored / "ranking.json").is_file():
        from nemotron_elastic.importance.pipeline import score_model

        _log("score the parent")
        score_model(parent, _calibration(out), scored, samples=plan.score_samples, seq_len=plan.seq_len,
                    depth_samples=max(2, plan.score_samples // 8), depth_seq_len=plan.seq_len // 2,
                    progress=progress, overwrite=True)
    return scored


def _train(name: str, folder: Path, make_trainer) -> float | None:
    """Train one run unless finished; returns its training seconds (summed over resumed attempts)."""
    timing = folder / "study-time.json"
    if ex.run_complete(folder):
        _log(f"{name}: finished before, reused")
    else:
        _log(f"{name}: training")
        resume = (folder / "train_config.yaml").is_file()
        start = time.perf_counter()
        try:
            make_trainer(resume).fit()
        finally:
            spent = time.perf_counter() - start
            before = json.loads(timing.read_text())["seconds"] if timing.is_file() else 0.0
            if folder.is_dir():
                timing.write_text(json.dumps({"seconds": round(before + spent, 1)}) + "\n")
    return json.loads(timing.read_text())["seconds"] if timing.is_file() else None


def run_study(parent: Path, out: Path, plan: ex.Plan, progress: bool = True) -> dict[str, Any]:
    """Train and evaluate every run (reusing finished ones); returns the results dict."""
    from nemotron_elastic.checkpoint import load_model
    from nemotron_elastic.train.elastic import ElasticTrainer
    from nemotron_elastic.train.pretrain import PretrainTrainer

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    scored = _scored(parent, out, plan, progress)
    config = load_model(scored).config
    tokens_dir = out / "tokens"
    runs: dict[str, dict[str, Any]] = {}

    def elastic(variant: str, seed: int, specs: dict[float, Any] | None = None, budgets=ex.BUDGETS) -> str:
        name = f"{variant}-s{seed}"
        folder = out / name
        paths = None if specs is None else [ex.write_spec(specs[b], out / "specs" / f"{name}-{b:g}.json")
                                            for b in budgets]
        cfg = ex.elastic_config(plan, variant, scored, folder, tokens_dir, seed, paths, budgets)
        seconds = _train(name, folder, lambda resume: ElasticTrainer(cfg, resume=resume, progress=progress))
        runs[name] = {"variant": variant, "seed": seed, "tokens": plan.tokens, "folder": str(folder),
                      "train_seconds": seconds}
        return name

    for seed in plan.seeds:
        main = elastic("elastic", seed)
        chosen = ex.router_specs(out / main / "model", config)
        if seed == plan.seeds[0]:
            for b in ex.BUDGETS[1:]:  # the Minitron route and from-scratch training, one model per size
                name = f"minitron-{b:g}"
                folder = out / name
                spec_path = ex.write_spec(chosen[b], out / "specs" / f"{name}.json")
                cfg = ex.elastic_config(plan, "single", scored, folder, tokens_dir, seed, [spec_path], (b,))
                seconds = _train(name, folder,
                                 lambda resume, c=cfg: ElasticTrainer(c, resume=resume, progress=progress))
                runs[name] = {"variant": "minitron", "seed": seed, "budget": b, "tokens": plan.tokens,
                              "folder": str(folder), "train_seconds": seconds}
                name = f"scratch-{b:g}"
                folder = out / name
                pcfg = ex.scratch_config(plan, chosen[b], scored, folder, tokens_dir, seed)
                seconds = _train(name, folder,
                                 lambda resume, c=pcfg: PretrainTrainer(c, resume=resume, progress=progress))
                runs[name] = {"variant": "scratch", "seed": seed, "budget": b, "tokens": plan.tokens,
                              "folder": str(folder), "train_seconds": seconds}
        for variant in ("stage1only", "stage2uniform", "homogeneous"):
            elastic(variant, seed)
        elastic("uniformspecs", seed, specs=ex.uniform_specs(out / main / "model", config))

    _log("evaluate")
    for name, run in runs.items():
        label = f"{run['budget']:g}" if run["variant"] == "scratch" else None
        run["eval"] = evaluate_run(Path(run["folder"]), plan, progress, label=label)
        if label is not None:  # a standalone model: its size relative to the parent, like every other row
            for rows in run["eval"].values():
                rows[label]["param_ratio"] = rows[label]["params"] / config.num_parameters()
        run["curve"] = learning_curve(Path(run["folder"]), plan)
        if run["variant"] != "scratch":  # each budget's spec, cost and held-out KD before / after training
            run["budgets"] = json.loads((Path(run["folder"]) / "model" / "budgets.json").read_text())
            if not run["budgets"].get("fixed_specs"):
                run["router_argmax"] = router_argmax_ratios(Path(run["folder"]) / "model")
    first = f"elastic-s{plan.seeds[0]}"
    before = {b: s.to_dict() for b, s in ex.router_specs(out / first / "model", config).items()}
    runs["parent-sliced"] = {"variant": "before", "seed": None, "tokens": 0, "folder": str(scored),
                             "eval": evaluate_run(scored, plan, progress, specs=before)}
    _log("depth rankings and memory")
    return {
        "parent": str(parent), "scored": str(scored), "plan": ex.dataclasses.asdict(plan) | {"tokens": plan.tokens},
        "parent_params": config.num_parameters(), "parent_tokens": _parent_tokens(parent),
        "runs": runs,
        "depth": depth_rankings(scored, _calibration(out), plan),
        "memory": family_memory(out / first / "model", out / "exports"),
        "seconds": round(time.perf_counter() - start, 1),
    }


def _parent_tokens(parent: Path) -> int | None:
    """Tokens the parent was pretrained on, when it comes from `nemotron-elastic pretrain`."""
    cfg_path = parent.parent / "train_config.yaml"
    if not cfg_path.is_file():
        return None
    from nemotron_elastic.config.run import PretrainConfig
    from nemotron_elastic.config.yaml_io import load_yaml

    try:
        cfg = load_yaml(PretrainConfig, cfg_path)
    except (ValueError, TypeError):
        return None
    return sum(s.steps * s.micro_batch * s.grad_accum * s.seq_len for s in cfg.stages)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parent", required=True, help="the pretrained parent (native or HF folder with tokenizer)")
    ap.add_argument("--out", default="runs/reproduce", help="work folder (runs, exports, tokens)")
    ap.add_argument("--results", default=str(ROOT.parent / "results" / "reproduce.json"))
    ap.add_argument("--doc", default=str(ROOT.parent.parent / "docs" / "RESULTS.md"))
    ap.add_argument("--quick", action="store_true", help="a few steps per run (a smoke test of the study)")
    ap.add_argument("--seeds", type=int, nargs="+", help="seeds of the elastic variants (default 0 1)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    parent = Path(args.parent)
    if not (parent / "config.yaml").is_file() and not (parent / "config.json").is_file():
        ap.error(f"--parent: {parent} is not a model folder (no config.yaml / config.json)")
    plan = QUICK if args.quick else ex.Plan()
    if args.seeds:
        plan = ex.dataclasses.replace(plan, seeds=tuple(args.seeds))
    from report import write_results

    results = run_study(parent, Path(args.out), plan, progress=not args.no_progress)
    paths = write_results(results, Path(args.results), Path(args.doc))
    _log("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
