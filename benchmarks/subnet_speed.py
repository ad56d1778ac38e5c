# SPDX-License-Identifier: Apache-2.0
"""Forward and train-step time of sub-models at 100% / 75% / 50% of the parameters: sliced vs masked.

Sliced runs the parent's forward on weight slices (compute falls with the budget); masked runs the full
width with 0/1 prefix masks (what NVIDIA's public hooks do: every budget costs a full step). Both are
measured side by side in one run, as ratios to the parent's own step, and written to
benchmarks/results/subnet_speed.json. Goal: a sliced train step at 50% costs <= 0.6x the full step.

    python benchmarks/subnet_speed.py [--preset tiny-hybrid --batch 4 --seq 256 --repeats 5 --bf16]
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine, step_arguments, time_interleaved, write_json  # noqa: E402

from nemotron_elastic.config.presets import get_preset  # noqa: E402
from nemotron_elastic.config.spec import SubnetSpec  # noqa: E402
from nemotron_elastic.model import HybridLM  # noqa: E402
from nemotron_elastic.model.masks import ElasticMasks
from nemotron_elastic.subnet.uniform import spec_for_budget  # noqa: E402


def main() -> None:
    args = step_arguments(__doc__, "subnet_speed.json")

    torch.manual_seed(0)
    cfg = get_preset(args.preset)
    model = HybridLM(cfg)
    model.init_weights()
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()

    specs = {"100%": SubnetSpec.full(cfg), "75%": spec_for_budget(cfg, 0.75), "50%": spec_for_budget(cfg, 0.5)}
    runs = {"parent": None}
    for name, spec in specs.items():
        runs[f"sliced {name}"] = ElasticMasks.from_spec(spec)
        runs[f"masked {name}"] = ElasticMasks.from_spec(spec, masked=True)

    def forward(masks):
        def fn():
            with torch.no_grad(), autocast:
                model(ids, subnet=masks)
        return fn

    def train_step(masks):
        def fn():
            with autocast:
                logits = model(ids, subnet=masks)
            torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids.flatten()).backward()
            model.zero_grad(set_to_none=True)
        return fn

    fwd = time_interleaved({k: forward(m) for k, m in runs.items()}, args.repeats)
    step = time_interleaved({k: train_step(m) for k, m in runs.items()}, args.repeats)
    tokens = args.batch * args.seq
    result = {
        "benchmark": "subnet_speed",
        "preset": args.preset,
        "batch": args.batch,
        "seq": args.seq,
        "bf16_autocast": args.bf16,
        "params": {k: s.param_count() for k, s in specs.items()},
        "param_fraction": {k: s.param_count() / cfg.num_parameters() for k, s in specs.items()},
        "specs": {k: s.to_dict() for k, s in specs.items()},
        "forward_s": fwd,
        "train_step_s": step,
        "forward_ratio_to_parent": {k: v / fwd["parent"] for k, v in fwd.items()},
        "train_step_ratio_to_parent": {k: v / step["parent"] for k, v in step.items()},
        "train_tokens_per_s": {k: tokens / v for k, v in step.items()},
        "goal": "sliced 50% train step <= 0.6x the parent's",
        "goal_met": step["sliced 50%"] / step["parent"] <= 0.6,
        "machine": machine(),
    }
    path = write_json(args.out, result)
    print(f"{'run':<14} {'fwd ratio':>10} {'step ratio':>11}")
    for k in runs:
        print(f"{k:<14} {result['forward_ratio_to_parent'][k]:>10.3f} {result['train_step_ratio_to_parent'][k]:>11.3f}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
