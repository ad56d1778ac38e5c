# SPDX-License-Identifier: Apache-2.0
"""Iterative depth ranking: the fast form (prefix reuse + Gram-matrix LM head) versus naive re-running.

Both searches run on the same model, calibration batch and number of greedy steps, interleaved in one run
(`_timing.time_interleaved`), and must return the same drop order. The speed ratio naive / fast goes to
benchmarks/results/depth_speed.json under the model's label (entries for other models are kept).

    python benchmarks/depth_speed.py                                   # tiny-hybrid preset, full search
    python benchmarks/depth_speed.py --model runs/smollm2 --label smollm2-135m --max-drops 1 --bf16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import RESULTS, machine, time_interleaved, write_json

from nemotron_elastic.importance.depth import depth_ranking, iterative_depth_naive

OUT = "depth_speed.json"


def load(args: argparse.Namespace) -> tuple[str, torch.nn.Module]:
    if args.model:
        from nemotron_elastic.checkpoint import load_model

        return args.label or Path(args.model).name, load_model(args.model)
    from nemotron_elastic.config.presets import get_preset
    from nemotron_elastic.model import HybridLM

    torch.manual_seed(0)
    model = HybridLM(get_preset(args.preset))
    model.init_weights()
    return args.preset, model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="any model path (native / HF / .gguf); default: a random --preset model")
    ap.add_argument("--label", help="the model's name in the results file (default: the path's last part)")
    ap.add_argument("--preset", default="tiny-hybrid")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--max-drops", type=int, help="greedy steps (default: num_layers - 1)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls of each form first")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 weights)")
    args = ap.parse_args()

    label, model = load(args)
    cfg = model.config
    ids = torch.randint(
        0, cfg.vocab_size, (args.samples, args.seq_len), generator=torch.Generator().manual_seed(0)
    )
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()
    drops = args.max_drops or cfg.num_layers - 1
    found: dict[str, list[int]] = {}

    def fast() -> None:
        with autocast:
            found["fast"] = depth_ranking(model, ids, drops, batch_size=args.samples).drop_order[:drops]

    def naive() -> None:
        with autocast:
            found["naive"] = iterative_depth_naive(model, ids, drops, batch_size=args.samples)[0]

    seconds = time_interleaved({"fast": fast, "naive": naive}, repeats=args.repeats, warmup=args.warmup)
    result = {
        "model": label,
        "pattern": cfg.pattern,
        "num_layers": cfg.num_layers,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "samples": args.samples,
        "seq_len": args.seq_len,
        "greedy_steps": drops,
        "bf16": args.bf16,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "seconds_fast": round(seconds["fast"], 3),
        "seconds_naive": round(seconds["naive"], 3),
        "speedup_naive_over_fast": round(seconds["naive"] / seconds["fast"], 2),
        "same_drop_order": found["fast"] == found["naive"],
        "drop_order": found["fast"],
    }
    print(json.dumps(result, indent=1))
    path = RESULTS / OUT
    runs = json.loads(path.read_text()).get("runs", {}) if path.is_file() else {}
    runs[label] = result
    write_json(OUT, {"machine": machine(), "runs": runs})


if __name__ == "__main__":
    main()
