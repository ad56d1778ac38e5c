# SPDX-License-Identifier: Apache-2.0
"""`nemotron-elastic eval`: per-budget held-out perplexity, bits per byte, size, memory, speed and lm-eval
tasks, as a terminal table, OUT/eval.json and OUT/eval.png (see `nemotron_elastic/eval/runner.py`).

What a command runs is imported inside its `cmd_` function, so that `--help` never imports torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..config.types import positive_int
from ..eval.lm_eval_tasks import parse_tasks
from ..eval.report import PLOT_NAME, format_table, model_name, write_report
from .common import add_device_args, add_window_args, resolve_device

EPILOGS = {
    "eval": """examples:
  nemotron-elastic eval --model runs/elastic/model
  nemotron-elastic eval --model runs/elastic/model --budgets 1.0,0.5 --tasks nemotron_heldout --limit 200
  nemotron-elastic eval --model runs/elastic/model --budgets 0.6 --interpolate
  nemotron-elastic eval --model exports/half-hf --data my_docs/ --max-tokens 65536 --seq-len 1024
  nemotron-elastic eval --model runs/parent --spec spec.json --out runs/eval/custom

Default data is the default corpus' held-out split. Shipped lm-eval tasks (no download):
nemotron_heldout_ppl, nemotron_heldout_cloze (tag nemotron_heldout); other lm-eval task names work
where their data is in the local Hugging Face cache. lm-eval's own command line with this model:
nemotron-elastic-lm-eval --model nemotron_elastic --model_args path=DIR,budget=0.5 --tasks ...""",
}


def default_out(model: str) -> Path:
    """runs/eval/<name>: the model folder's name, or the run's name for a trainer's `<run>/model`."""
    return Path("runs") / "eval" / model_name(model)


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate every requested budget; print the table; write eval.json and eval.png."""
    device, dtype = resolve_device(args)  # first: a missing device is refused before anything is read
    from ..eval.runner import EvalSettings, evaluate_model
    from ..eval.targets import parse_budgets

    settings = EvalSettings(
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        stride=args.stride,
        max_tokens=args.max_tokens,
        dtype=None if dtype is None else str(dtype).removeprefix("torch."),
        bf16=args.bf16,
        device=str(device),
        tasks=parse_tasks(args.tasks) if args.tasks else [],
        task_limit=args.limit,
        bootstrap_iters=args.bootstrap_iters,
    )
    if args.stride is not None and args.stride > args.seq_len:
        raise ValueError(f"--stride: {args.stride} is larger than --seq-len {args.seq_len}")
    if args.limit is not None and not settings.tasks:
        raise ValueError("--limit: applies to lm-eval tasks; pass --tasks too")
    out = Path(args.out) if args.out else default_out(args.model)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    budgets = parse_budgets(args.budgets) if args.budgets is not None else None
    result = evaluate_model(
        args.model,
        budgets,
        args.spec,
        args.data,
        settings,
        interpolate=args.interpolate,
        progress=not args.quiet,
    )
    paths = write_report(result, out)
    print(format_table(result))
    if paths["plot"] is None:
        print(f"note: no {out / PLOT_NAME}: {paths['skipped']}", file=sys.stderr)
        print(f"wrote {paths['json']}")
    else:
        print(f"wrote {paths['json']} and {paths['plot']}")
    return 0


def register(add: Any) -> None:
    """Add the `eval` subcommand; `add(name, func, help)` returns its parser."""
    p = add(
        "eval",
        cmd_eval,
        "Per-budget perplexity, bits/byte, size, memory, speed and lm-eval tasks of a model.",
    )
    p.add_argument(
        "--model", required=True, metavar="DIR", help="elastic checkpoint, native / HF folder or .gguf file"
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--budgets", metavar="B,B,...", help="budgets of an elastic checkpoint (default: every trained one)"
    )
    which.add_argument("--spec", metavar="FILE", help="a SubnetSpec JSON file: one sub-model of any model")
    p.add_argument(
        "--interpolate",
        action="store_true",
        help="allow budgets between trained ones (the router picks their spec); refused otherwise",
    )
    p.add_argument(
        "--data",
        metavar="PATH",
        help="text / jsonl / parquet / arrow file or folder (default: held-out split)",
    )
    p.add_argument(
        "--max-tokens",
        type=positive_int,
        default=16384,
        metavar="N",
        help="held-out tokens scored (default 16384)",
    )
    add_window_args(p)
    p.add_argument(
        "--stride",
        type=positive_int,
        metavar="S",
        help="sliding windows every S tokens (default: non-overlapping)",
    )
    add_device_args(p)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (faster on CPUs with AVX512-BF16)")
    p.add_argument("--tasks", metavar="T,T,...", help="lm-eval tasks per budget, e.g. nemotron_heldout")
    p.add_argument(
        "--limit", type=positive_int, metavar="N", help="lm-eval documents per task (default: all)"
    )
    p.add_argument(
        "--bootstrap-iters",
        type=int,
        default=0,
        metavar="N",
        help="lm-eval bootstrap resamples for perplexity standard errors (default 0: none, fast)",
    )
    p.add_argument(
        "--out", metavar="DIR", help="where eval.json / eval.png go (default: runs/eval/<model name>)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
