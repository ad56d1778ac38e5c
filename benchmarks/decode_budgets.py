# SPDX-License-Identifier: Apache-2.0
"""In-process decoding tokens/s per budget and batch size, for one or more source trees side by side.

    python benchmarks/decode_budgets.py                       # this tree
    python benchmarks/decode_budgets.py --tree OLD --tree .   # e.g. OLD = `git worktree add /tmp/old <rev>`

Each tree runs in its own subprocess (its own `nemotron_elastic` first on the path), one after the other in
one run, on the same random-weights model (`serve_memory.bench_config`: the 56M hybrid of serve_load.py) and
the same prompts: greedy `generate` of `--tokens` tokens after a 16-token prompt, at 1 and 8 rows, for the
parent and the uniform sub-model at 0.5 (`spec_at_ratio`), best of `--repeats`. No HTTP and no load
generator: what the model and the batcher cost (docs/SERVING.md).

Writes benchmarks/results/decode_budgets.json.
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


def measure(tree: Path, hidden: int, tokens: int, repeats: int) -> dict[str, float]:
    """tokens/s per "x{rows}@{budget}" for the package in `tree` (run in this process)."""
    sys.path[:0] = [str(tree), str(HERE)]
    import torch
    from serve_memory import bench_config

    from nemotron_elastic.model import HybridLM
    from nemotron_elastic.model.batcher import generate
    from nemotron_elastic.subnet.uniform import spec_at_ratio

    torch.manual_seed(0)
    cfg = bench_config(hidden, 1, 4096)
    model = HybridLM(cfg)
    model.init_weights()
    model.eval()
    out = {}
    for rows in ROWS:
        ids = torch.randint(0, cfg.vocab_size, (rows, 16))
        for budget in BUDGETS:
            spec = None if budget == 1.0 else spec_at_ratio(cfg, budget)
            generate(model, ids, 4, subnet=spec)  # warm-up
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                generate(model, ids, tokens, subnet=spec)
                best = min(best, time.perf_counter() - start)
            out[f"x{rows}@{budget:g}"] = rows * tokens / best
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", help="a source tree holding nemotron_elastic/ (repeatable; "
                                                    "default: this one)")
    ap.add_argument("--hidden", type=int, default=1088)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "decode_budgets.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)  # internal: measure this tree, print JSON
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child), args.hidden, args.tokens, args.repeats)))
        return
    trees = [Path(t).resolve() for t in (args.tree or [HERE.parent])]
    for tree in trees:
        if not (tree / "nemotron_elastic").is_dir():
            ap.error(f"--tree: {tree} holds no nemotron_elastic/ package")
    results = {}
    for tree in trees:
        rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=False).stdout.strip() or "unknown"
        cmd = [sys.executable, __file__, "--child", str(tree), "--hidden", str(args.hidden),
               "--tokens", str(args.tokens), "--repeats", str(args.repeats)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tree)
        speeds = json.loads(done.stdout.strip().splitlines()[-1])
        results[f"{tree.name}@{rev}"] = {
            "tokens_per_s": speeds,
            "x8_over_x1_at_1": speeds["x8@1"] / speeds["x1@1"],
            "budget0.5_over_1_at_x8": speeds["x8@0.5"] / speeds["x8@1"],
            "budget0.5_over_1_at_x1": speeds["x1@0.5"] / speeds["x1@1"],
        }
        print(tree, json.dumps(results[f"{tree.name}@{rev}"]), flush=True)
    record = {"benchmark": "decode_budgets", "hidden": args.hidden, "tokens": args.tokens, "repeats": args.repeats,
              "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None, "trees": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
