# SPDX-License-Identifier: Apache-2.0
"""What closes the elastic family's gap to the Minitron route? One setting of the recipe changed at a time,
each run paired with the reproduction study's recipe run of the same seed.

    python benchmarks/reproduce/gap.py --parent runs/parent/model [--out runs/reproduce] [--variants len2T ...]

Run after `run.py` on the same parent and folder: the scored parent, the token cache and the baseline (the
study's `elastic-s{seed}` runs, their spread run and the Minitron runs) come from there and from
`benchmarks/results/reproduce.json`. Every variant trains the study's seeds; its sub-models are compared
with the recipe's (paired by seed, same spec or size curves, the tie rule of `paired.py`) and with the
Minitron route's, so the table shows both whether the change helps and how much of the gap it closes.
Variants (the recipe's value in brackets):

    len2T, len4T        training length 2T / 4T (T), both stages scaled
    weights-small       stage-2 budget weights 0.2/0.3/0.5 (0.5/0.3/0.2: favouring the full model)
    lr-x2, lr-x0.5, lr-x4   model learning rate (5e-4); lr-x4 added after lr-x2 leaned lower at 0.75 / 0.5
    routerlr-x0.1, routerlr-x3   router learning rate (1e-2)
    fullpull-0          router.full_pull 0 (10: the full-budget row pulled to the full model)
    tau-0.3             Gumbel temperature annealed to 0.3 instead of 0.05 (a slower cooling)

Writes benchmarks/results/gap_study.json after every run (reused later when the scored parent is the same,
by weights SHA-256); `run.py --report-only` puts its reading into docs/RESULTS.md.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import experiments as ex
from measure import evaluate_run, router_argmax_ratios
from run import (
    _device,
    _log,
    _now,
    _scored,
    _train,
    _write_json,
    follow_up_parser,
    follow_up_plan,
    weights_sha256,
)


def variants(plan: ex.Plan) -> dict[str, tuple[ex.Plan, dict[str, Any]]]:
    """{name: (the plan it trains with, config changes over the recipe)}."""
    longer = {f"len{k}T": (dataclasses.replace(plan, stage1_steps=k * plan.stage1_steps,
                                               stage2_steps=k * plan.stage2_steps), {}) for k in (2, 4)}
    return longer | {
        "weights-small": (plan, {"stages.1.budget_weights": list(reversed(ex.STAGE2_WEIGHTS))}),
        "lr-x2": (plan, {"optim.lr": 2 * plan.lr}),
        "lr-x0.5": (plan, {"optim.lr": 0.5 * plan.lr}),
        "lr-x4": (plan, {"optim.lr": 4 * plan.lr}),
        "routerlr-x0.1": (plan, {"router.lr": 1e-3}),
        "routerlr-x3": (plan, {"router.lr": 3e-2}),
        "fullpull-0": (plan, {"router.full_pull": 0.0}),
        "tau-0.3": (plan, {"router.tau_end": 0.3}),
    }


def run_gap(parent: Path, out: Path, plan: ex.Plan, names: list[str], results_path: Path | None,
            progress: bool = True) -> dict[str, Any]:
    """Train and evaluate every (variant, seed) run of the gap study, reusing finished ones."""
    return run_variants(parent, out, plan, variants(plan), names, "gap", results_path, progress)


def run_variants(parent: Path, out: Path, plan: ex.Plan, table: dict[str, tuple[ex.Plan, dict[str, Any]]],
                 names: list[str], study: str, results_path: Path | None, progress: bool = True) -> dict[str, Any]:
    """Train and evaluate every (variant, seed) run of a follow-up study (`table`: {name: (plan, config
    changes over the recipe)}), in folders `{study}-{name}-s{seed}` of `out`, reusing finished folders and
    the entries of `results_path` scored from the same parent; writes `results_path` after every run and
    returns the results dict. Each entry records where the router's own argmax lands (`router_argmax`)."""
    from nemotron_elastic.train.elastic import ElasticTrainer

    start = time.perf_counter()
    scored = _scored(parent, out, plan, progress)
    sha = weights_sha256(scored)
    prior = json.loads(results_path.read_text()) if results_path is not None and results_path.is_file() else {}
    if prior.get("scored_sha256") != sha or prior.get("training_key") != plan.training_key():
        prior = {}
    runs: dict[str, Any] = {}
    results = {"parent": str(parent), "scored_sha256": sha, "training_key": plan.training_key(),
               "plan": dataclasses.asdict(plan) | {"tokens": plan.tokens}, "device": _device(),
               "started_at": prior.get("started_at") or _now(), "complete": False, "runs": runs}
    for seed in plan.seeds:
        for name in names:
            run_plan, changes = table[name]
            key = f"{study}-{name}-s{seed}"
            folder = out / key
            old = prior.get("runs", {}).get(key)
            if not ex.run_complete(folder) and old is not None:
                _log(f"{key}: finished before (in the results JSON), reused")
                runs[key] = old
                continue
            cfg = ex.elastic_config(run_plan, "elastic", scored, folder, out / "tokens", seed, changes=changes)
            entry = {"variant": f"{study}:{name}", "seed": seed, "tokens": run_plan.tokens, "changes": changes}
            entry["train_seconds"] = _train(key, folder, lambda resume, cfg=cfg: ElasticTrainer(
                cfg, resume=resume, progress=progress))
            entry["eval"] = evaluate_run(folder, plan, progress)
            entry["budgets"] = json.loads((folder / "model" / "budgets.json").read_text())
            entry["router_argmax"] = router_argmax_ratios(folder / "model")
            runs[key] = entry
            results |= {"seconds": round(time.perf_counter() - start, 1), "updated_at": _now()}
            if results_path is not None:
                _write_json(results_path, results | {"runs": prior.get("runs", {}) | runs})
    # runs of other variants (earlier invocations with other --variants) stay in the file
    results |= {"complete": True, "seconds": round(time.perf_counter() - start, 1), "updated_at": _now(),
                "runs": prior.get("runs", {}) | runs}
    if results_path is not None:
        _write_json(results_path, results)
    return results


def main(argv: list[str] | None = None) -> None:
    ap = follow_up_parser(__doc__, "runs/reproduce", "gap_study.json")
    ap.add_argument("--variants", nargs="+", help="which variants (default: all, in the order listed)")
    args = ap.parse_args(argv)
    parent, plan = follow_up_plan(ap, args)
    known = list(variants(plan))
    unknown = [v for v in args.variants or [] if v not in known]
    if unknown:
        ap.error(f"--variants: unknown {', '.join(unknown)} (choose from {', '.join(known)})")
    run_gap(parent, Path(args.out), plan, args.variants or known, Path(args.results), not args.no_progress)
    _log(f"wrote {args.results}")


if __name__ == "__main__":
    main()
