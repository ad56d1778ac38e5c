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
The JSON is rewritten after every finished run (an interrupted study keeps what it finished, and a later
invocation with the same settings reuses those runs even when `runs/` is gone); `--report-only` regenerates
the doc and plots from the JSON without training:

    python benchmarks/reproduce/run.py --report-only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

import experiments as ex
from measure import depth_rankings, evaluate_run, family_memory, learning_curve, router_argmax_ratios

QUICK = ex.Plan(stage1_steps=2, stage2_steps=2, seq_len=32, micro_batch=2, grad_accum=1, eval_tokens=256,
                train_eval_tokens=128, long_seq=64, score_samples=4, seeds=(0,), route_seeds=(0,))


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


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _device() -> str:
    """Where this process trains: the GPU's name, or the CPU."""
    import platform

    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def weights_sha256(folder: Path) -> str:
    """SHA-256 over a model folder's safetensors files (names and bytes, sorted by name): the identity of the
    scored parent every run of the study starts from."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(folder.glob("*.safetensors")):
        h.update(p.name.encode())
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def prior_results(path: Path | None, plan: ex.Plan, scored_sha256: str | None = None) -> dict[str, Any] | None:
    """The study's JSON from an earlier invocation when its runs were trained with this plan's settings
    (`Plan.training_key`; the seeds may differ) from the same scored parent (`scored_sha256`, when given:
    a JSON that records another parent or none is not reused), with the Minitron and scratch runs of the old
    layout (`minitron-0.75`, one seed) renamed as today's (`minitron-0.75-s0`); None otherwise."""
    if path is None or not path.is_file():
        return None
    prior = json.loads(path.read_text())
    if any(prior.get("plan", {}).get(k) != v for k, v in plan.training_key().items()):
        _log(f"{path}: trained with other settings, its runs are not reused")
        return None
    if scored_sha256 is not None and prior.get("scored_sha256") != scored_sha256:
        _log(f"{path}: trained from another scored parent (weights SHA-256 "
             f"{str(prior.get('scored_sha256'))[:12]} vs {scored_sha256[:12]}), its runs are not reused")
        return None
    runs = {}
    for name, run in prior.get("runs", {}).items():
        if run.get("variant") in ("minitron", "scratch") and not name.endswith(f"-s{run.get('seed')}"):
            name = f"{name}-s{run['seed']}"
        runs[name] = run
    return prior | {"runs": runs}


def run_study(parent: Path, out: Path, plan: ex.Plan, progress: bool = True, results_path: Path | None = None,
              reuse_results: bool = True) -> dict[str, Any]:
    """Train and evaluate every run (reusing finished ones); returns the results dict.

    Each run is evaluated as soon as it is trained, and `results_path` is rewritten after every run (an
    interrupted study keeps what it finished). A run is reused from its folder when complete, else (with
    `reuse_results`) from the entry of `results_path` written by an earlier invocation with the same settings,
    so a study continues from its committed JSON even where `runs/` is gone."""
    from nemotron_elastic.checkpoint import load_model
    from nemotron_elastic.train.elastic import ElasticTrainer
    from nemotron_elastic.train.pretrain import PretrainTrainer

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    scored = _scored(parent, out, plan, progress)
    config = load_model(scored).config
    tokens_dir = out / "tokens"
    fingerprint = weights_sha256(scored)
    prior = prior_results(results_path, plan, fingerprint) if reuse_results else None
    runs: dict[str, dict[str, Any]] = {}
    results: dict[str, Any] = {
        "parent": str(parent), "scored": str(scored), "plan": ex.dataclasses.asdict(plan) | {"tokens": plan.tokens},
        "scored_sha256": fingerprint,
        "parent_params": config.num_parameters(), "parent_tokens": _parent_tokens(parent),
        "device": _device(), "commit": _commit(), "started_at": (prior or {}).get("started_at") or _now(),
        "planned_runs": plan.run_names(), "complete": False, "runs": runs,
    }

    def save() -> None:
        """Rewrite the JSON; until the study completes it keeps the earlier invocation's runs not yet
        visited, so an interruption loses nothing that was recorded."""
        results["seconds"] = round(time.perf_counter() - start, 1)
        results["updated_at"] = _now()
        if results_path is None:
            return
        carried = {} if results["complete"] else {k: v for k, v in (prior or {}).get("runs", {}).items()
                                                  if k not in runs}
        _write_json(results_path, results | {"runs": runs | carried})

    def finish(name: str, folder: Path, entry: dict[str, Any], make_trainer, label: str | None = None) -> dict:
        """Train (or reuse) one run, evaluate it, record it and rewrite the JSON."""
        old = (prior or {}).get("runs", {}).get(name)
        if not ex.run_complete(folder) and old is not None and "eval" in old:
            _log(f"{name}: finished before (in the results JSON), reused")
            runs[name] = old
            save()
            return old
        entry["train_seconds"] = _train(name, folder, make_trainer)
        entry["device"] = _device()
        t0 = time.perf_counter()
        entry["eval"] = evaluate_run(folder, plan, progress, label=label)
        if label is not None:  # a standalone model: its size relative to the parent, like every other row
            for rows in entry["eval"].values():
                rows[label]["param_ratio"] = rows[label]["params"] / config.num_parameters()
        entry["curve"] = learning_curve(folder, plan)
        if entry["variant"] != "scratch":  # each budget's spec, cost and held-out KD before / after training
            entry["budgets"] = json.loads((folder / "model" / "budgets.json").read_text())
            if not entry["budgets"].get("fixed_specs"):
                entry["router_argmax"] = router_argmax_ratios(folder / "model")
        entry["eval_seconds"] = round(time.perf_counter() - t0, 1)
        runs[name] = entry
        save()
        return entry

    def elastic(variant: str, seed: int, specs: dict[float, Any] | None = None, order_seed: int | None = None) -> str:
        name = f"{variant}-s{seed}" + ("" if order_seed is None else f"-o{order_seed}")
        folder = out / name
        paths = None if specs is None else [ex.write_spec(specs[b], out / "specs" / f"{name}-{b:g}.json")
                                            for b in ex.BUDGETS]
        cfg = ex.elastic_config(plan, variant, scored, folder, tokens_dir, seed, paths, ex.BUDGETS, order_seed)
        entry = {"variant": variant, "seed": seed, "tokens": plan.tokens, "folder": str(folder)}
        if order_seed is not None:
            entry["order_seed"] = order_seed
        finish(name, folder, entry, lambda resume: ElasticTrainer(cfg, resume=resume, progress=progress))
        return name

    def route(kind: str, b: float, seed: int, spec) -> None:
        """One model of the Minitron route (T or, `minitronhalf`, T/2 tokens) or from scratch, at `spec`."""
        name = f"{kind}-{b:g}-s{seed}"
        folder = out / name
        p = plan.half() if kind == "minitronhalf" else plan
        entry = {"variant": kind, "seed": seed, "budget": b, "tokens": p.tokens, "folder": str(folder)}
        if kind == "scratch":
            pcfg = ex.scratch_config(p, spec, scored, folder, tokens_dir, seed)
            finish(name, folder, entry, lambda resume: PretrainTrainer(pcfg, resume=resume, progress=progress),
                   label=f"{b:g}")
            return
        spec_path = ex.write_spec(spec, out / "specs" / f"{name}.json")
        cfg = ex.elastic_config(p, "single", scored, folder, tokens_dir, seed, [spec_path], (b,))
        finish(name, folder, entry, lambda resume: ElasticTrainer(cfg, resume=resume, progress=progress))

    for seed in plan.seeds:
        main = elastic("elastic", seed)
        chosen = ex.router_specs(runs[main]["budgets"], config)
        if seed == plan.spread_seed:  # the same run on other data orders: the spread of repeated runs
            for order in plan.spread_order_seeds:
                elastic("elastic", seed, order_seed=order)
        if seed in plan.route_seeds:  # the Minitron route and from-scratch training, one model per size
            for b in ex.BUDGETS[1:]:
                for kind in ("minitron", "scratch", "minitronhalf"):
                    route(kind, b, seed, chosen[b])
        for variant in ("stage1only", "stage2uniform", "homogeneous"):
            elastic(variant, seed)
        elastic("uniformspecs", seed, specs=ex.uniform_specs(chosen, config))

    first = f"elastic-s{plan.seeds[0]}"
    before = {b: s.to_dict() for b, s in ex.router_specs(runs[first]["budgets"], config).items()}
    runs["parent-sliced"] = {"variant": "before", "seed": None, "tokens": 0, "folder": str(scored),
                             "eval": evaluate_run(scored, plan, progress, specs=before)}
    _log("depth rankings and memory")
    results["depth"] = depth_rankings(scored, _calibration(out), plan)
    if ex.run_complete(out / first):
        results["memory"] = family_memory(out / first / "model", out / "exports")
    elif prior is not None and prior.get("memory") is not None:
        results["memory"] = prior["memory"]  # the first elastic run came from the JSON: so do its file sizes
    results["train_seconds_total"] = round(sum(r.get("train_seconds") or 0 for r in runs.values()), 1)
    results["complete"] = True
    save()
    return results


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


def follow_up_parser(doc: str, out: str, results: str) -> argparse.ArgumentParser:
    """The arguments every follow-up study on the study's parent takes (`scoring.py`, `gap.py`, `decision.py`)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parent", required=True, help="the pretrained parent (native or HF folder with tokenizer)")
    ap.add_argument("--out", default=out, help="work folder (scored parent, runs, tokens)")
    ap.add_argument("--results", default=str(ROOT.parent / "results" / results))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="a few steps per run (a smoke test)")
    ap.add_argument("--stage-steps", type=int, nargs=2, metavar=("S1", "S2"),
                    help="steps of stage 1 and stage 2 of a full run T (default 150 60): a shorter plan for a "
                         "larger parent; studies that train T/2 take half of each")
    ap.add_argument("--eval-tokens", type=int, help="held-out tokens of each final evaluation (default 16384)")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def follow_up_plan(ap: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[Path, ex.Plan]:
    """The checked parent and the plan (`--quick`, `--seeds`) of a follow-up study."""
    parent = Path(args.parent)
    if not (parent / "config.yaml").is_file() and not (parent / "config.json").is_file():
        ap.error(f"--parent: {parent} is not a model folder (no config.yaml / config.json)")
    changes: dict[str, Any] = {}
    if args.stage_steps is not None:
        if min(args.stage_steps) < 2:
            ap.error(f"--stage-steps: each stage needs at least 2 steps (half of them for T/2), got {args.stage_steps}")
        changes |= {"stage1_steps": args.stage_steps[0], "stage2_steps": args.stage_steps[1]}
    if args.eval_tokens is not None:
        if args.eval_tokens < 1:
            ap.error(f"--eval-tokens: expected a positive count, got {args.eval_tokens}")
        changes["eval_tokens"] = args.eval_tokens
    plan = ex.dataclasses.replace(QUICK if args.quick else ex.Plan(), seeds=tuple(args.seeds),
                                  route_seeds=tuple(args.seeds[:1]), spread_seed=args.seeds[0], **changes)
    return parent, plan


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parent", help="the pretrained parent (native or HF folder with tokenizer)")
    ap.add_argument("--out", default="runs/reproduce", help="work folder (runs, exports, tokens)")
    ap.add_argument("--results", default=str(ROOT.parent / "results" / "reproduce.json"))
    ap.add_argument("--scoring-results", default=str(ROOT.parent / "results" / "retrained_scoring.json"),
                    help="the retrained scoring comparison (scoring.py) the doc reads when the file exists")
    ap.add_argument("--scoring-smollm2-results",
                    default=str(ROOT.parent / "results" / "retrained_scoring_smollm2.json"),
                    help="the retrained scoring comparison on SmolLM2-135M (scoring.py --parent <imported "
                         "smollm2>), read when the file exists")
    ap.add_argument("--gap-results", default=str(ROOT.parent / "results" / "gap_study.json"),
                    help="the gap study (gap.py) the doc reads when the file exists")
    ap.add_argument("--decision-results", default=str(ROOT.parent / "results" / "decision_study.json"),
                    help="the decision study (decision.py) the doc reads when the file exists")
    ap.add_argument("--doc", default=str(ROOT.parent.parent / "docs" / "RESULTS.md"))
    ap.add_argument("--quick", action="store_true", help="a few steps per run (a smoke test of the study)")
    ap.add_argument("--seeds", type=int, nargs="+", help="seeds of the elastic variants (default 0 1 2)")
    ap.add_argument("--route-seeds", type=int, nargs="+",
                    help="seeds of the Minitron and from-scratch routes, among --seeds (default 0 1)")
    ap.add_argument("--spread-orders", type=int, nargs="*",
                    help="data orders (data.order_seed) of the repeats of the first seed's recipe run (default 1000)")
    ap.add_argument("--no-reuse-results", action="store_true",
                    help="do not reuse runs recorded in --results whose folders are missing (retrain them)")
    ap.add_argument("--report-only", action="store_true",
                    help="regenerate --doc and its plots from --results, without training (--results is not rewritten)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    from report import write_results

    extras = {name: json.loads(Path(p).read_text()) if Path(p).is_file() else None
              for name, p in (("scoring", args.scoring_results), ("gap", args.gap_results),
                              ("decision", args.decision_results), ("scoring_smollm2", args.scoring_smollm2_results))}
    if args.report_only:
        results = json.loads(Path(args.results).read_text())
        paths = write_results(results, None, Path(args.doc), **extras)
        _log("wrote " + ", ".join(str(p) for p in paths))
        return
    if args.parent is None:
        ap.error("--parent is required (unless --report-only)")
    parent = Path(args.parent)
    if not (parent / "config.yaml").is_file() and not (parent / "config.json").is_file():
        ap.error(f"--parent: {parent} is not a model folder (no config.yaml / config.json)")
    plan = QUICK if args.quick else ex.Plan()
    changes: dict[str, Any] = {}
    if args.seeds:
        changes["seeds"] = tuple(args.seeds)
        changes["route_seeds"] = tuple(s for s in plan.route_seeds if s in args.seeds) or (args.seeds[0],)
        changes["spread_seed"] = plan.spread_seed if plan.spread_seed in args.seeds else args.seeds[0]
    if args.route_seeds:
        changes["route_seeds"] = tuple(args.route_seeds)
    if args.spread_orders is not None:
        changes["spread_order_seeds"] = tuple(args.spread_orders)
    try:
        plan = ex.dataclasses.replace(plan, **changes)
    except ValueError as e:
        ap.error(str(e))
    results = run_study(parent, Path(args.out), plan, progress=not args.no_progress, results_path=Path(args.results),
                        reuse_results=not args.no_reuse_results)
    paths = write_results(results, Path(args.results), Path(args.doc), **extras)
    _log("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
