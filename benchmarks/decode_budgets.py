# SPDX-License-Identifier: Apache-2.0
"""In-process decoding tokens/s per budget and batch size, for one or more source trees side by side.

    python benchmarks/decode_budgets.py                       # this tree
    python benchmarks/decode_budgets.py --tree OLD --tree .   # e.g. OLD = `git worktree add /tmp/old <rev>`

Each tree runs in its own subprocess (its own `nemotron_elastic` first on the path), one after the other in
one run, on the same random-weights model (`serve_memory.bench_config`: the 56M hybrid of serve_load.py) in
`--dtype` and the same prompts: greedy `generate` of `--tokens` tokens after a 16-token prompt, at 1 and 8
rows, for the parent and the budget-0.5 sub-model that serve_load.py serves (`spec_for_budget`: half the
parameters), best of `--repeats`; and `churn8@...`: 8 requests in flight in a closed loop, staggered lengths,
as the server runs them (`churn`). No HTTP and no load generator: what the model and the batcher cost
(docs/SERVING.md). `--rounds N` runs the trees in turn N times and keeps each number's best.

`runs_matmul` (this tree only): a sliced Mamba in_proj of that sub-model (4 runs of kept rows) at 1 and 8
rows, as one batched matmul on the strided weight blocks versus one 2-D matmul per run (model/layout.py
`_each_run`, the CPU's torch form) versus (float32) one kernel call for every run, in float32 and bfloat16,
milliseconds over 12 layers' weights.
`--tiled` adds the last tree run again with its block weights in tiles (model/tiles.py), as the server holds
a float32 model on a CPU: each budget then reads only its own part of the weights.
`few_rows` (this tree only): 1..16 rows times 12 weights of 3264 x 1088 as x @ W^T and as W @ x^T per dtype,
one row as torch.mv, and float32 with the few-rows kernel (model/layout.py `FEW_ROWS`, `VECTOR_DTYPES`,
`KERNEL_MIN_ROWS`; model/cpu_kernels.py). `--without-kernel` adds the last tree run again with the kernel
switched off (NEMOTRON_ELASTIC_CPU_KERNELS=0): the kernel's share of the tokens/s, side by side.

Writes benchmarks/results/decode_budgets.json (one entry per --dtype; the others are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROWS = (1, 8)
BUDGETS = (1.0, 0.5)


def measure(tree: Path, hidden: int, tokens: int, repeats: int, dtype: str, tiled: bool = False) -> dict[str, float]:
    """tokens/s per "x{rows}@{budget}" for the package in `tree` (run in this process); `tiled`: the block
    weights in tiles, as the server holds a float32 model on a CPU (model/tiles.py)."""
    sys.path[:0] = [str(tree), str(HERE)]
    import torch
    from serve_memory import bench_config

    from nemotron_elastic.model import HybridLM
    from nemotron_elastic.model.batcher import generate
    from nemotron_elastic.subnet.uniform import spec_for_budget

    torch.manual_seed(0)
    cfg = bench_config(hidden, 1, 4096)
    model = HybridLM(cfg)
    model.init_weights()
    model.eval().to(getattr(torch, dtype))
    if tiled:
        model.use_tiled_weights()
    out = churn(model, cfg, tokens, repeats)
    for rows in ROWS:
        ids = torch.randint(0, cfg.vocab_size, (rows, 16))
        for budget in BUDGETS:
            spec = None if budget == 1.0 else spec_for_budget(cfg, budget)
            generate(model, ids, 4, subnet=spec)  # warm-up
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                generate(model, ids, tokens, subnet=spec)
                best = min(best, time.perf_counter() - start)
            out[f"x{rows}@{budget:g}"] = rows * tokens / best
    return out


def churn(model, cfg, tokens: int, repeats: int) -> dict[str, float]:
    """tokens/s of a closed loop through the ContinuousBatcher, as the server runs it: 8 requests in flight
    (16-token prompts, tokens / 2 .. 3 * tokens / 2 new tokens each, staggered), the next one submitted when
    one finishes, 32 in all, for budget 1.0, budget 0.5 and the three budgets in turn (under `widest`, the
    server's default), best of `repeats`. Requests join while others decode, so most steps that admit one
    carry its prompt next to one-token rows."""
    import torch

    from nemotron_elastic.model.batcher import ContinuousBatcher, SequenceRequest
    from nemotron_elastic.subnet.uniform import spec_for_budget

    specs = {1.0: None, 0.75: spec_for_budget(cfg, 0.75), 0.5: spec_for_budget(cfg, 0.5)}
    prompts = torch.randint(0, cfg.vocab_size, (32, 16), generator=torch.Generator().manual_seed(1)).tolist()
    lengths = [tokens // 2 + (7 * i) % tokens for i in range(len(prompts))]
    out = {}
    for name, budgets in {"1": [1.0], "0.5": [0.5], "mixed": [1.0, 0.75, 0.5]}.items():
        best = float("inf")
        for _ in range(repeats):
            batcher, sent, done = ContinuousBatcher(model, mixed="widest"), 0, 0
            start = time.perf_counter()
            while done < len(prompts):
                while sent < len(prompts) and sent - done < 8:
                    spec = specs[budgets[sent % len(budgets)]]
                    batcher.submit(SequenceRequest(prompts[sent], lengths[sent], spec, 0.0))
                    sent += 1
                done += sum(1 for event in batcher.step() if event.finish is not None)
            best = min(best, time.perf_counter() - start)
        out[f"churn8@{name}"] = sum(lengths) / best
    return out


def best_ms(run, repeats: int) -> float:
    """The fastest of `repeats` calls of `run` after one warm-up, in milliseconds."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def runs_matmul(hidden: int, repeats: int) -> dict[str, dict[str, float]]:
    """ms of the budget-0.5 in_proj's kept rows times 1 / 8 rows over 12 layers' weights (this tree): torch's
    products as one batched matmul per progression or one matmul per run, and (float32, when built) the
    few-rows kernel's one call for every run."""
    sys.path[:0] = [str(HERE.parent), str(HERE)]
    import torch
    from serve_memory import bench_config

    from nemotron_elastic.model import cpu_kernels
    from nemotron_elastic.model.layout import _linear_by_runs, _runs_matmul, kept, mamba_indices
    from nemotron_elastic.subnet.uniform import spec_for_budget

    cfg = bench_config(hidden, 1, 4096)
    spec = spec_for_budget(cfg, 0.5)
    rows = kept(mamba_indices(cfg.mamba_num_heads, cfg.mamba_head_dim, cfg.mamba_n_groups, cfg.ssm_state_size,
                              spec.mamba_heads[0] // cfg.mamba_n_groups, spec.mamba_head_dim).in_proj)
    out: dict[str, dict[str, float]] = {}
    for dtype in (torch.float32, torch.bfloat16):
        full = 2 * cfg.mamba_num_heads * cfg.mamba_head_dim + 2 * cfg.mamba_n_groups * cfg.ssm_state_size
        layers = [torch.nn.Linear(hidden, full + cfg.mamba_num_heads, bias=False).to(dtype)
                  for _ in range(12)]  # 12 weights: more than the caches hold, as in a model
        for t in (1, 8):
            x = torch.randn(t, spec.hidden, dtype=dtype)
            key = f"{str(dtype).split('.')[-1]} x{t}"
            forms = {"batched": lambda x=x, ls=layers: [_runs_matmul(x, w, rows, spec.hidden, True) for w in ls],
                     "per_run": lambda x=x, ls=layers: [_runs_matmul(x, w, rows, spec.hidden, False) for w in ls]}
            if dtype == torch.float32 and cpu_kernels.library() is not None:
                forms["kernel"] = lambda x=x, ls=layers: [_linear_by_runs(x, w, rows, spec.hidden) for w in ls]
            with torch.no_grad():
                out[key] = {name: best_ms(run, 5 * repeats) for name, run in forms.items()}
            out[key]["batched_over_per_run"] = out[key]["batched"] / out[key]["per_run"]
            if "kernel" in out[key]:
                out[key]["kernel_over_per_run"] = out[key]["kernel"] / out[key]["per_run"]
    return out


def few_rows(repeats: int) -> dict[str, dict[str, dict[str, float]]]:
    """ms of 1..16 rows times 12 weights of 3264 x 1088 (more than the caches hold, as in a model), as
    x @ W^T (F.linear), as W @ x^T, (one row) as torch.mv and (float32, when built) with the few-rows kernel
    (model/cpu_kernels.py), per dtype: where model/layout.py `FEW_ROWS`, `VECTOR_DTYPES` and
    `KERNEL_MIN_ROWS` come from."""
    import torch
    import torch.nn.functional as F

    from nemotron_elastic.model import cpu_kernels

    out: dict[str, dict[str, dict[str, float]]] = {}
    for dtype in (torch.float32, torch.bfloat16):
        weights = [torch.randn(3264, 1088).to(dtype) for _ in range(12)]
        for rows in range(1, 17):
            x = torch.randn(rows, 1088).to(dtype)
            forms = {"x_wt": lambda x=x, ws=weights: [F.linear(x, w) for w in ws],
                     "w_xt": lambda x=x, ws=weights: [(w @ x.t()).t().contiguous() for w in ws]}
            if rows == 1:
                forms["mv"] = lambda x=x, ws=weights: [torch.mv(w, x[0]) for w in ws]
            if dtype == torch.float32 and cpu_kernels.library() is not None:
                forms["kernel"] = lambda x=x, ws=weights: [cpu_kernels.few_rows(x, w) for w in ws]
            with torch.no_grad():
                times = {name: best_ms(run, 5 * repeats) for name, run in forms.items()}
            times["w_xt_over_x_wt"] = times["w_xt"] / times["x_wt"]
            if "kernel" in times:
                times["kernel_over_best_torch"] = times["kernel"] / min(times["x_wt"], times["w_xt"])
            out.setdefault(str(dtype).split(".")[-1], {})[str(rows)] = times
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", help="a source tree holding nemotron_elastic/ (repeatable; "
                                                    "default: this one)")
    ap.add_argument("--hidden", type=int, default=1088)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="the model's dtype")
    ap.add_argument("--rounds", type=int, default=1, help="the trees in turn this many times (best of all: "
                                                           "this VM's speed drifts between processes)")
    ap.add_argument("--without-kernel", action="store_true", help="also the last tree with "
                    "NEMOTRON_ELASTIC_CPU_KERNELS=0 (torch's products instead of the few-rows kernel)")
    ap.add_argument("--tiled", action="store_true", help="also the last tree with the block weights in tiles "
                    "(model/tiles.py: how the server holds a float32 model on a CPU)")
    ap.add_argument("--out", default=str(HERE / "results" / "decode_budgets.json"))
    ap.add_argument("--child-tiled", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", help=argparse.SUPPRESS)  # internal: measure this tree, print JSON
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child), args.hidden, args.tokens, args.repeats, args.dtype,
                                 args.child_tiled)))
        return
    trees = [Path(t).resolve() for t in (args.tree or [HERE.parent])]
    for tree in trees:
        if not (tree / "nemotron_elastic").is_dir():
            ap.error(f"--tree: {tree} holds no nemotron_elastic/ package")
    # (tree, kernel switched off?, tiled?): the last tree also without the kernels (--without-kernel) and
    # with tiled weights (--tiled)
    variants = [(tree, False, False) for tree in trees] + ([(trees[-1], True, False)] if args.without_kernel else [])
    variants += [(trees[-1], False, True)] if args.tiled else []
    best: dict[tuple[Path, bool, bool], dict[str, float]] = {v: {} for v in variants}
    for _ in range(args.rounds):
        for tree, off, tiled in variants:
            cmd = [sys.executable, __file__, "--child", str(tree), "--hidden", str(args.hidden),
                   "--tokens", str(args.tokens), "--repeats", str(args.repeats), "--dtype", args.dtype]
            cmd += ["--child-tiled"] if tiled else []
            env = {**os.environ, "NEMOTRON_ELASTIC_CPU_KERNELS": "0"} if off else None
            done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tree, env=env)
            for key, value in json.loads(done.stdout.strip().splitlines()[-1]).items():
                best[(tree, off, tiled)][key] = max(value, best[(tree, off, tiled)].get(key, 0.0))
    results = {}
    for tree, off, tiled in variants:
        rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=False).stdout.strip() or "unknown"
        speeds = best[(tree, off, tiled)]
        label = f"{tree.name}@{rev}" + (" without the kernel" if off else "") + (" tiled" if tiled else "")
        results[label] = {
            "tokens_per_s": speeds,
            "x8_over_x1_at_1": speeds["x8@1"] / speeds["x1@1"],
            "budget0.5_over_1_at_x8": speeds["x8@0.5"] / speeds["x8@1"],
            "budget0.5_over_1_at_x1": speeds["x1@0.5"] / speeds["x1@1"],
            "churn8_over_x1_at_1": speeds["churn8@1"] / speeds["x1@1"],
            "churn8_budget0.5_over_1": speeds["churn8@0.5"] / speeds["churn8@1"],
        }
        print(label, json.dumps(results[label]), flush=True)
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    record = {"benchmark": "decode_budgets", "hidden": args.hidden, "tokens": args.tokens, "repeats": args.repeats,
              "rounds": args.rounds,
              "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
              "budget_0.5": "spec_for_budget (the sub-model serve_load.py serves: half the parameters)",
              "dtypes": previous.get("dtypes", {}) | {args.dtype: {"trees": results}},
              "runs_matmul": runs_matmul(args.hidden, args.repeats), "few_rows": few_rows(args.repeats)}
    print(json.dumps(record["runs_matmul"], indent=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
