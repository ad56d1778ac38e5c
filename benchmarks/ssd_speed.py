# SPDX-License-Identifier: Apache-2.0
"""Speed of our pure-torch SSD scan against transformers' torch path, side by side in one run.

Times forward + backward of `nemotron_elastic.model.ssd.ssd_chunked` and of transformers'
`models.nemotron_h.modeling_nemotron_h.mamba2_chunk_scan` (its torch fallback, called with dt already
processed: dt_softplus=False, dt_bias=None, default dt_limit) on the same fp32 CPU inputs, interleaving
the two so that machine noise hits both alike. Prints a table and writes
benchmarks/results/ssd_speed.json; ratio = transformers time / ours time (> 1: ours is faster).

    .venv/bin/python benchmarks/ssd_speed.py [--repeats 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from transformers.models.nemotron_h import modeling_nemotron_h

from nemotron_elastic.model.ssd import ssd_chunked

# Always the torch path: the hub-kernel decorator keeps the plain function as __wrapped__.
_hf_fn = modeling_nemotron_h.mamba2_chunk_scan
hf_chunk_scan = getattr(_hf_fn, "__wrapped__", _hf_fn)

CASES = [  # (b, l, h, p, g, n, chunk_size)
    (4, 256, 16, 16, 2, 32, 64),
    (4, 256, 16, 16, 2, 32, 32),
    (2, 1000, 8, 32, 1, 64, 64),
]


def make_inputs(b: int, l: int, h: int, p: int, g: int, n: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, l, h, p, generator=gen)
    dt = torch.rand(b, l, h, generator=gen) * 0.1 + 1e-3
    A = -torch.rand(h, generator=gen) * 4 - 0.5
    B = torch.randn(b, l, g, n, generator=gen)
    C = torch.randn(b, l, g, n, generator=gen)
    D = torch.randn(h, generator=gen)
    return [t.requires_grad_() for t in (x, dt, A, B, C, D)]


def fwd_bwd(fn, inputs: list[torch.Tensor]) -> float:
    for t in inputs:
        t.grad = None
    start = time.perf_counter()
    fn(*inputs).sum().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ssd_speed.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    for b, l, h, p, g, n, q in CASES:
        inputs = make_inputs(b, l, h, p, g, n)
        ours = lambda x, dt, A, B, C, D: ssd_chunked(x, dt, A, B, C, q, D=D)  # noqa: E731
        theirs = lambda x, dt, A, B, C, D: hf_chunk_scan(x, dt, A, B, C, q, D=D)  # noqa: E731
        with torch.no_grad():
            diff = (ours(*inputs) - theirs(*inputs)).abs().max().item()
        for _ in range(3):  # warm-up (allocator, thread pool)
            fwd_bwd(ours, inputs), fwd_bwd(theirs, inputs)
        t_ours, t_hf = [], []
        for _ in range(args.repeats):
            t_ours.append(fwd_bwd(ours, inputs))
            t_hf.append(fwd_bwd(theirs, inputs))
        row = {
            "shape": {"b": b, "l": l, "h": h, "p": p, "g": g, "n": n, "chunk_size": q},
            "ours_ms": 1e3 * statistics.median(t_ours),
            "transformers_ms": 1e3 * statistics.median(t_hf),
            "max_abs_diff_y": diff,
        }
        row["ratio"] = row["transformers_ms"] / row["ours_ms"]
        rows.append(row)
        print(
            f"b={b} l={l} h={h} p={p} g={g} n={n} q={q}: ours {row['ours_ms']:.2f} ms, "
            f"transformers {row['transformers_ms']:.2f} ms, ratio {row['ratio']:.2f}x (max |dy| {diff:.1e})"
        )

    result = {
        "what": "forward+backward, fp32, CPU, median of repeats; ratio = transformers / ours",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "load_average_1min": os.getloadavg()[0],  # other work on the machine inflates both times
        "cases": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)  # never leave a half-written result
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
