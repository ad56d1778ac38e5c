# SPDX-License-Identifier: Apache-2.0
"""Elastic training step vs a plain KD step of the sliced model of the same size, side by side.

For each budget the router picks a spec (the default decision within the budget); we time (a) the elastic micro-step (router probabilities, masks,
the student's sliced forward inside the parent, chunked KL to the frozen teacher, budget loss, backward into
the parent and the router) against (b) a plain KD step of the standalone sliced model of that spec (same
teacher, same chunked KL, backward into the small model). The teacher's forward is in both. Ratios go to
benchmarks/results/train_step.json. Goal: elastic <= 1.15x plain (routing and masking cost little).

    python benchmarks/train_step.py [--preset tiny-hybrid --batch 4 --seq 256 --repeats 5 --bf16]
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine, step_arguments, teacher_and_student, time_interleaved, write_json  # noqa: E402

from nemotron_elastic.config.run import TrainConfig  # noqa: E402
from nemotron_elastic.config.types import from_dict  # noqa: E402
from nemotron_elastic.router import CostTable, Router, build_menu, decide, to_spec  # noqa: E402
from nemotron_elastic.subnet.slicing import slice_model  # noqa: E402
from nemotron_elastic.train.losses import kl_div_chunked  # noqa: E402
from nemotron_elastic.train.step import StepContext, elastic_loss, teacher_hidden  # noqa: E402


def main() -> None:
    args = step_arguments(__doc__, "train_step.json")
    cfg, teacher, student = teacher_and_student(args.preset)
    menus = [build_menu(cfg, "hidden", [1.0, 0.875, 0.75, 0.625, 0.5]),
             build_menu(cfg, "mlp", [1.0, 0.75, 0.5, 0.25], per_layer=True),
             build_menu(cfg, "mamba_heads", [1.0, 0.75, 0.5])]
    budgets = [1.0, 0.75, 0.5]
    router = Router(menus, budgets)
    md = {m.axis: m for m in menus}
    # train the router on the budget loss alone for a moment so that each budget picks a sized spec
    train_cfg = from_dict(TrainConfig, {"budgets": budgets, "bf16": args.bf16})
    table = CostTable(cfg, md)  # the trainer's default `router.decision: within_budget`
    ctx = StepContext(train_cfg, student, teacher, router, md, table)
    from nemotron_elastic.router import budget_loss

    opt = torch.optim.Adam(router.parameters(), lr=1e-2)
    for step in range(150):
        b = budgets[step % 3]
        loss, _ = budget_loss(cfg, md, router.probs(b, 0.5, 5.0), b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    tokens = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1))
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.bf16 else contextlib.nullcontext

    runs, specs = {}, {}
    for b in budgets:
        with torch.no_grad():
            logits = router.logits(b)
        spec = to_spec(cfg, md, logits, decide(logits, b, table))
        specs[b] = spec
        small = slice_model(student, spec).train().requires_grad_(True)

        def elastic(b=b):
            with autocast():
                loss, _ = elastic_loss(ctx, tokens, b, tau=0.05, scale=10.0)
            loss.backward()
            student.zero_grad(set_to_none=True)
            router.zero_grad(set_to_none=True)

        def plain(small=small):
            inputs = tokens[:, :-1]
            with autocast():
                t_h = teacher_hidden(teacher, inputs)
                s_h = small(inputs, return_hidden=True)
            loss = kl_div_chunked(s_h, small.head_weight(), t_h, teacher.lm_head.weight)
            loss.backward()
            small.zero_grad(set_to_none=True)

        runs[f"elastic {b:g}"], runs[f"plain {b:g}"] = elastic, plain
    seconds = time_interleaved(runs, args.repeats)
    ratios = {f"{b:g}": seconds[f"elastic {b:g}"] / seconds[f"plain {b:g}"] for b in budgets}
    result = {
        "benchmark": "train_step", "preset": args.preset, "batch": args.batch, "seq": args.seq,
        "bf16_autocast": args.bf16, "seconds": seconds, "elastic_over_plain": ratios,
        "params": {f"{b:g}": specs[b].param_count() for b in budgets},
        "specs": {f"{b:g}": specs[b].to_dict() for b in budgets},
        "goal": "elastic step <= 1.15x the plain KD step of the same-size sliced model",
        "goal_met": all(r <= 1.15 for r in ratios.values()), "machine": machine(),
    }
    for b in budgets:
        print(f"budget {b:<5g} params {specs[b].param_count():>9,}  elastic / plain = {ratios[f'{b:g}']:.3f}")
    print(f"written to {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
