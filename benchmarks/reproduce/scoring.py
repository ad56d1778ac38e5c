# SPDX-License-Identifier: Apache-2.0
"""Width scoring points judged after retraining, not zero shot: which ranking gives the better pruned model
once it is distilled?

    python benchmarks/reproduce/scoring.py --parent runs/parent/model [--out runs/scoring]

For each axis whose scoring point the project moved away from the paper's (docs/METHOD.md 4.1, 11):

    mlp              MLP post-activation (default)   vs  pre-activation (the paper)
    mamba_heads      Mamba out_proj input (default)  vs  the in_proj x branch (the paper)
    attention_heads  attention head output (default) vs  o_proj input (Model-Optimizer; the paper gives none)

the parent is scored once per point (`score_model`, every other point at its default), the axis alone is
cut to half its width by each ranking (every other axis full: their orders only permute the function), and
each cut is distilled from the parent (a fixed-spec run, the Minitron route) for the same short token budget,
T/2 of the reproduction study. Held-out perplexity is compared point against point, paired by seed, with the
tie rule of `paired.py`; the spread is the same cut of the default point repeated on another data order
(one repeat per axis). The zero-shot perplexity of each cut is recorded next to it.

Writes benchmarks/results/retrained_scoring.json after every run (an interrupted study keeps what it
finished; a later invocation reuses those runs when the scored parents are the same, by weights SHA-256);
docs/RESULTS.md reads it (`run.py --report-only`). `--quick` runs a few steps (the test suite uses it).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import experiments as ex
import paired as pr
from measure import evaluate_run
from run import (
    _calibration,
    _device,
    _log,
    _now,
    _train,
    _write_json,
    follow_up_parser,
    follow_up_plan,
    weights_sha256,
)

# axis -> (the score_model keyword, the default point, the alternative point)
AXES = {
    "mlp": ("mlp_point", "post", "pre"),
    "mamba_heads": ("mamba_point", "out_proj_input", "x"),
    "attention_heads": ("attention_point", "head_output", "o_proj_input"),
}
RATIO = 0.5  # the cut: this fraction of the axis' width
SPREAD_ORDER = 1000  # data.order_seed of the repeated run (one per axis, the default point, the first seed)


def run_name(axis: str, point: str, seed: int, order_seed: int | None = None) -> str:
    return f"{axis}-{point}-s{seed}" + ("" if order_seed is None else f"-o{order_seed}")


def planned_runs(axes: list[str], seeds: tuple[int, ...]) -> list[tuple[str, str, int, int | None]]:
    """(axis, point, seed, order_seed) of every run, in training order: per seed both points of every axis;
    after the first seed, the repeat of each axis' default."""
    out = []
    for i, seed in enumerate(seeds):
        for axis in axes:
            _, default, alt = AXES[axis]
            out += [(axis, default, seed, None), (axis, alt, seed, None)]
            if i == 0:
                out.append((axis, default, seed, SPREAD_ORDER))
    return out


def _score(parent: Path, out: Path, key: str, point: str, plan: ex.Plan, progress: bool) -> Path:
    """The parent scored with `key=point`, every other point at the project's point of `AXES` (named, not
    left to the library defaults, so a later change of default keeps this study's scored parents), once per
    point."""
    folder = out / "scored" / point
    if not (folder / "ranking.json").is_file():
        from nemotron_elastic.importance.pipeline import score_model

        _log(f"score the parent ({key}={point})")
        score_model(parent, _calibration(out), folder, samples=plan.score_samples, seq_len=plan.seq_len,
                    depth_samples=2, depth_seq_len=plan.seq_len // 2, max_depth_drops=1, progress=progress,
                    overwrite=True, **({kw: ours for kw, ours, _ in AXES.values()} | {key: point}))
    return folder


def _zero_shot(scored: Path, spec: dict, plan: ex.Plan) -> dict[str, float]:
    """Held-out perplexity of the cut before any training, at both contexts."""
    from nemotron_elastic.eval.runner import EvalSettings, evaluate_model

    return {str(seq): evaluate_model(scored, spec=spec, settings=EvalSettings(
        seq_len=seq, batch_size=4, max_tokens=plan.eval_tokens))["rows"][0]["perplexity"]
        for seq in (plan.seq_len, plan.long_seq)}


def run_study(parent: Path, out: Path, plan: ex.Plan, axes: list[str], results_path: Path | None,
              progress: bool = True) -> dict[str, Any]:
    """Score, cut, distil and evaluate every planned run (reusing finished ones); returns the results dict."""
    from nemotron_elastic.checkpoint import load_model
    from nemotron_elastic.subnet.uniform import spec_at_ratio
    from nemotron_elastic.train.elastic import ElasticTrainer

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    short = plan.half()
    scored = {p: _score(parent, out, AXES[a][0], p, plan, progress) for a in axes for p in AXES[a][1:]}
    shas = {p: weights_sha256(f) for p, f in scored.items()}
    prior = json.loads(results_path.read_text()) if results_path is not None and results_path.is_file() else {}
    if prior.get("training_key") != short.training_key() or prior.get("scored_sha256") != shas:
        prior = {}  # other settings or another parent: nothing is reused
    runs: dict[str, Any] = {}
    results = {"parent": str(parent), "plan": ex.dataclasses.asdict(short) | {"tokens": short.tokens},
               "training_key": short.training_key(), "ratio": RATIO, "axes": {a: AXES[a] for a in axes},
               "scored_sha256": shas, "device": _device(), "started_at": prior.get("started_at") or _now(),
               "complete": False, "runs": runs}
    tokens_dir = out / "tokens"
    for axis, point, seed, order in planned_runs(axes, plan.seeds):
        name = run_name(axis, point, seed, order)
        folder = out / name
        old = prior.get("runs", {}).get(name)
        if not ex.run_complete(folder) and old is not None:
            _log(f"{name}: finished before (in the results JSON), reused")
            runs[name] = old
            continue
        config = load_model(scored[point]).config
        spec = spec_at_ratio(config, RATIO, (axis,))
        spec_path = ex.write_spec(spec, out / "specs" / f"{axis}.json")
        cfg = ex.elastic_config(short, "single", scored[point], folder, tokens_dir, seed, [spec_path], (RATIO,),
                                order)
        entry = {"axis": axis, "point": point, "seed": seed, "order_seed": order, "tokens": short.tokens,
                 "param_ratio": spec.param_count() / config.num_parameters(),
                 "zero_shot": _zero_shot(scored[point], spec.to_dict(), plan)}
        entry["train_seconds"] = _train(name, folder, lambda resume, cfg=cfg: ElasticTrainer(cfg, resume=resume,
                                                                                             progress=progress))
        entry["eval"] = {ctx: rows[f"{RATIO:g}"] for ctx, rows in evaluate_run(folder, plan, progress).items()}
        runs[name] = entry
        results |= {"seconds": round(time.perf_counter() - start, 1), "updated_at": _now()}
        if results_path is not None:
            _write_json(results_path, results | {"runs": prior.get("runs", {}) | runs})
    results |= {"complete": True, "seconds": round(time.perf_counter() - start, 1), "updated_at": _now(),
                "verdicts": analyse(results)}
    if results_path is not None:
        _write_json(results_path, results)
    return results


def _ppl(runs: dict[str, Any], axis: str, point: str, ctx: str, order: int | None = None) -> dict[int, float]:
    """{seed: held-out perplexity at `ctx`} of the runs cutting `axis` by `point`'s ranking on data order
    `order` (None: the seed's own)."""
    return {r["seed"]: r["eval"][ctx]["perplexity"] for r in runs.values()
            if r["axis"] == axis and r["point"] == point and r.get("order_seed") == order}


def analyse(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per axis and context: the default point's perplexity minus the alternative's, seed by seed, the spread
    (|default - its repeat on another data order|) and the tie rule's verdict; `winner` names the point
    called lower, or None."""
    out: dict[str, dict[str, Any]] = {}
    runs = results["runs"]
    for axis, (_, default, alt) in results["axes"].items():
        per_ctx = {}
        ctxs = sorted({c for r in runs.values() if r["axis"] == axis for c in r["eval"]}, key=int)
        for ctx in ctxs:
            main, other = _ppl(runs, axis, default, ctx), _ppl(runs, axis, alt, ctx)
            repeats = _ppl(runs, axis, default, ctx, SPREAD_ORDER)
            gaps = [abs(main[s] - v) for s, v in repeats.items() if s in main]
            spread = max(gaps) if gaps else None
            diffs = pr.paired_differences(main, other)
            verdict = pr.tie_rule(diffs, spread)
            winner = None if verdict.status != pr.CALLED else (default if verdict.effect < 0 else alt)
            per_ctx[ctx] = {"default": main, "alternative": other, "diffs": diffs, "spread": spread,
                            "status": verdict.status, "reason": verdict.reason, "winner": winner}
        out[axis] = per_ctx
    return out


def main(argv: list[str] | None = None) -> None:
    ap = follow_up_parser(__doc__, "runs/scoring", "retrained_scoring.json")
    ap.add_argument("--axes", nargs="+", choices=list(AXES), default=list(AXES))
    args = ap.parse_args(argv)
    parent, plan = follow_up_plan(ap, args)
    results = run_study(parent, Path(args.out), plan, args.axes, Path(args.results), not args.no_progress)
    for axis, per_ctx in results["verdicts"].items():
        for ctx, v in per_ctx.items():
            _log(f"{axis} @ {ctx}: default - alternative {v['diffs']} spread {v['spread']} -> {v['status']}")


if __name__ == "__main__":
    main()
