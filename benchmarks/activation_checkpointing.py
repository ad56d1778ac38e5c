# SPDX-License-Identifier: Apache-2.0
"""Activation checkpointing: step time and bytes saved for backward, with and without, side by side.

One training step (forward, chunked KL to a frozen teacher, backward) of the student at the full budget and
at a sub-model, for `checkpoint_every` 0 (off), 2 (every other block) and 1 (every block). Time is the median
of interleaved repeats; memory is the bytes of the distinct tensors saved for backward (parameters left
out), counted with `torch.autograd.graph.saved_tensors_hooks`. Ratios against "off" go to
benchmarks/results/activation_checkpointing.json. Expected: about 1.3x the time at `every block` for a
fraction of the activation memory (the bytes saved in the forward; the block being recomputed adds its own
while it runs again).

    python benchmarks/activation_checkpointing.py [--preset tiny-hybrid --batch 4 --seq 256 --repeats 5 --bf16]
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine, step_arguments, teacher_and_student, time_interleaved, write_json  # noqa: E402

from nemotron_elastic.config.spec import SubnetSpec  # noqa: E402
from nemotron_elastic.subnet.uniform import spec_for_budget  # noqa: E402
from nemotron_elastic.train.losses import kl_div_chunked  # noqa: E402
from nemotron_elastic.train.plan import saved_bytes, storage_ids  # noqa: E402

SETTINGS = {"off": 0, "every_other_block": 2, "every_block": 1}


def main() -> None:
    args = step_arguments(__doc__, "activation_checkpointing.json")
    cfg, teacher, student = teacher_and_student(args.preset)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        t_hidden = teacher(ids, return_hidden=True)
    specs = {"1.0": SubnetSpec.full(cfg), "0.5": spec_for_budget(cfg, 0.5)}

    def forward(spec: SubnetSpec, every: int) -> torch.Tensor:
        with autocast:
            s_hidden = student(ids, subnet=spec, return_hidden=True, checkpoint_every=every)
            return kl_div_chunked(s_hidden, student.head_weight(spec), t_hidden, teacher.lm_head.weight)

    def step(spec: SubnetSpec, every: int):
        def run() -> None:
            forward(spec, every).backward()
            student.zero_grad(set_to_none=True)

        return run

    def memory(spec: SubnetSpec, every: int) -> int:
        """Saved during the forward only: a checkpointed block saves again while recomputed in backward."""
        losses = []
        saved = saved_bytes(lambda: losses.append(forward(spec, every)), params)
        losses[0].backward()
        student.zero_grad(set_to_none=True)
        return saved

    params = storage_ids(student.parameters())
    rows = {}
    for budget, spec in specs.items():
        fns = {name: step(spec, every) for name, every in SETTINGS.items()}
        seconds = time_interleaved(fns, args.repeats)
        saved = {name: memory(spec, every) for name, every in SETTINGS.items()}
        rows[budget] = {
            name: {"seconds": seconds[name], "time_ratio": seconds[name] / seconds["off"],
                   "saved_bytes": saved[name], "memory_ratio": saved[name] / saved["off"]}
            for name in SETTINGS
        }
        print(f"budget {budget}: " + ", ".join(
            f"{name} {r['time_ratio']:.2f}x time, {r['memory_ratio']:.2f}x saved bytes" for name, r in rows[budget].items()
        ))
    result = {"machine": machine(), "preset": args.preset, "batch": args.batch, "seq": args.seq,
              "bf16": args.bf16, "repeats": args.repeats, "budgets": rows}
    print(f"written to {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
