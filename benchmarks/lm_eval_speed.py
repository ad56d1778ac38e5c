# SPDX-License-Identifier: Apache-2.0
"""The shipped lm-eval tasks one request at a time versus batched by length (the `nemotron_elastic` model).

Both modes score the same model on the shipped loglikelihood tasks (nemotron_heldout_cloze:
`loglikelihood`, nemotron_heldout_ppl: `loglikelihood_rolling`) through `lm_eval.simple_evaluate`, in one
run, in turn (unbatched, batched, unbatched, ...): `batch_size=1` is one request (or rolling window) per
forward pass, the old path; the batched mode sorts by length and runs `--batch-size` rows per pass. Times
are medians over `--repeats`, of the whole task run and of the model's scoring calls alone; every metric
of the two modes must agree (max difference reported, absolute and relative, and each metric's). Goal:
batched >= 3x faster, every metric within 1e-4 (`math.isclose`, rel_tol = abs_tol = 1e-4: relative for
the perplexities, which a random model puts in the millions, absolute for accuracy and bits per byte).
The gain is the per-forward overhead saved, so it is large for small models (micro-hybrid: 3.1x on 2 CPU
cores) and none where one request already keeps the CPU busy (tiny-hybrid, 256-token windows: ~1x; on a CPU
the batched mode holds at most BATCH_TOKENS padded tokens per pass, eval/token_scoring.py).
`forward_ceiling` measures that bound directly: the model's forward per row over full windows, one row at a
time against one CPU batch of rows; no batching of the requests can beat its ratio.
Results go to benchmarks/results/lm_eval_speed.json under the model's label (other entries are kept).

    python benchmarks/lm_eval_speed.py --repeats 3        # random tiny-hybrid + a 4096-token BPE, --limit 100
    python benchmarks/lm_eval_speed.py --preset micro-hybrid --vocab 300 --limit 200 --max-length 64 \
        --repeats 3                                       # the eval tests' model size
    python benchmarks/lm_eval_speed.py --model runs/parent/model --label tiny-parent --limit 50
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import RESULTS, machine, write_json

from nemotron_elastic.eval.lm_eval_model import DEFAULT_BATCH_SIZE, NemotronElasticLM
from nemotron_elastic.eval.lm_eval_tasks import SHIPPED_TASKS, run_tasks, task_manager
from nemotron_elastic.eval.token_scoring import BATCH_TOKENS

OUT = "lm_eval_speed.json"
TOLERANCE = 1e-4


def random_model(preset: str, vocab: int, root: Path) -> Path:
    """A `preset` model with random weights (seed 0) and a byte-level BPE of `vocab` tokens trained on the
    default corpus' train split, saved as a native checkpoint in root/model."""
    from nemotron_elastic.checkpoint import save_native
    from nemotron_elastic.config.presets import get_preset
    from nemotron_elastic.data.corpus import default_corpus
    from nemotron_elastic.data.tokenizer import train_bpe
    from nemotron_elastic.model import HybridLM

    tokenizer = train_bpe(default_corpus("train"), vocab)
    model = HybridLM(dataclasses.replace(get_preset(preset), vocab_size=len(tokenizer)))
    model.init_weights(torch.Generator().manual_seed(0))
    return save_native(model, root / "model", tokenizer=tokenizer)


class Timed:
    """Adds up the seconds an lm-eval model spends in its scoring calls."""

    def __init__(self, lm: NemotronElasticLM) -> None:
        self.seconds = 0.0
        for name in ("loglikelihood", "loglikelihood_rolling"):
            setattr(lm, name, self.wrap(getattr(lm, name)))

    def wrap(self, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def forward_ceiling(model, max_length: int, rows: int, repeats: int) -> dict[str, float]:
    """What batching can gain at most here: ms per row of the model's forward over full `max_length` windows
    (the rolling task's shape), one row at a time against `rows` rows in one pass (the CPU batch:
    token_scoring.BATCH_TOKENS), best of `repeats` after a warm-up. Batching removes per-pass overhead; it
    cannot remove per-token work, so this ratio bounds the scoring speedup of the batched mode."""
    ids = torch.randint(0, model.config.vocab_size, (rows, max_length), generator=torch.Generator().manual_seed(0))
    out = {}
    with torch.inference_mode():
        for label, batch in (("one_row", ids[:1]), (f"{rows}_rows", ids)):
            model(batch)
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                model(batch)
                best = min(best, time.perf_counter() - start)
            out[f"ms_per_row_{label}"] = round(best * 1e3 / batch.shape[0], 2)
    out["ceiling"] = round(out["ms_per_row_one_row"] / out[f"ms_per_row_{rows}_rows"], 2)
    return out


def differences(a: dict, b: dict) -> tuple[float, float]:
    """Max absolute and max relative difference over every metric of every task (same keys required)."""
    assert a.keys() == b.keys(), (a.keys(), b.keys())
    absolute = relative = 0.0
    for task, row in a.items():
        assert row.keys() == b[task].keys(), (task, row.keys(), b[task].keys())
        for key, x in row.items():
            y = b[task][key]
            diff = abs(x - y)
            absolute = max(absolute, diff)
            relative = max(relative, diff / max(abs(x), abs(y)) if diff else 0.0)
    return absolute, relative


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", help="any model path (native / HF / .gguf / elastic); default: random --preset"
    )
    ap.add_argument("--label", help="the model's name in the results file (default: the path's last part)")
    ap.add_argument("--budget", type=float, help="a trained budget of an elastic --model")
    ap.add_argument("--preset", default="tiny-hybrid")
    ap.add_argument("--vocab", type=int, default=4096, help="BPE size of the random model's tokenizer")
    ap.add_argument("--limit", type=int, default=100, help="documents per task")
    ap.add_argument("--max-length", type=int, default=256, help="the model's context (rolling windows)")
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--out", default=OUT, help="results file: a name in benchmarks/results/ or a path")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or random_model(args.preset, args.vocab, Path(tmp))
        label = args.label or (Path(args.model).name if args.model else args.preset)
        single = NemotronElasticLM(
            path=str(path), budget=args.budget, batch_size=1, max_length=args.max_length
        )
    batched = NemotronElasticLM.from_model(
        single.model, single.tokenizer, single.target, label, args.batch_size, args.max_length
    )
    modes = {"one_at_a_time": single, "batched": batched}
    timers = {}
    for lm in modes.values():
        lm.progress = False
    load_before = os.getloadavg()[0]  # another process on the cores slows small forward passes most
    manager = task_manager(list(SHIPPED_TASKS))
    run_tasks(batched, list(SHIPPED_TASKS), limit=2, manager=manager)  # warm-up: datasets, kernels
    for name, lm in modes.items():
        timers[name] = Timed(lm)
    seconds: dict[str, list[float]] = {k: [] for k in modes}
    scoring: dict[str, list[float]] = {k: [] for k in modes}
    metrics: dict[str, dict] = {}
    for repeat in range(args.repeats):
        for name, lm in modes.items():
            timers[name].seconds = 0.0
            start = time.perf_counter()
            metrics[name] = run_tasks(lm, list(SHIPPED_TASKS), limit=args.limit, manager=manager)
            seconds[name].append(time.perf_counter() - start)
            scoring[name].append(timers[name].seconds)
            print(
                f"repeat {repeat}: {name:14s} {seconds[name][-1]:7.2f} s ({scoring[name][-1]:.2f} s scoring)"
            )
    absolute, relative = differences(metrics["one_at_a_time"], metrics["batched"])
    within = all(
        math.isclose(x, metrics["batched"][task][key], rel_tol=TOLERANCE, abs_tol=TOLERANCE)
        for task, row in metrics["one_at_a_time"].items()
        for key, x in row.items()
    )
    median = {k: statistics.median(v) for k, v in seconds.items()}
    median_scoring = {k: statistics.median(v) for k, v in scoring.items()}
    cfg = single.model.config
    rows = max(1, min(args.batch_size, BATCH_TOKENS["cpu"] // args.max_length))
    ceiling = forward_ceiling(single.model, args.max_length, rows, max(3, args.repeats))
    print(f"forward per row, 1 row vs {rows} rows of {args.max_length} tokens: {json.dumps(ceiling)}")
    result = {
        "model": label,
        "budget": args.budget,
        "pattern": cfg.pattern,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "params": single.target.spec.param_count(),
        "tasks": list(SHIPPED_TASKS),
        "limit": args.limit,
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # at start, at end
        "seconds": {k: round(v, 3) for k, v in median.items()},
        "scoring_seconds": {k: round(v, 3) for k, v in median_scoring.items()},
        "seconds_each_repeat": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
        "speedup": round(median["one_at_a_time"] / median["batched"], 2),
        "scoring_speedup": round(median_scoring["one_at_a_time"] / median_scoring["batched"], 2),
        "forward_ceiling": ceiling,
        "max_metric_abs_diff": absolute,
        "max_metric_rel_diff": relative,
        "metrics_within_1e-4": within,
        "metrics": metrics["batched"],
        "metric_abs_diffs": {
            task: {key: abs(x - metrics["batched"][task][key]) for key, x in row.items()}
            for task, row in metrics["one_at_a_time"].items()
        },
    }
    previous = json.loads((RESULTS / args.out).read_text()) if (RESULTS / args.out).exists() else {}
    runs = previous.get("runs", {}) | {label: result}
    write_json(args.out, {"machine": machine(), "runs": runs})
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
