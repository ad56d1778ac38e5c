# SPDX-License-Identifier: Apache-2.0
"""Native HybridLM vs transformers on the same config and weights: forward and train-step tokens/s.

Both models hold the same weights (the native one is imported from the HF one); they run interleaved in
one process, and the result is the ratio native / transformers (>= 1.0: the native model is not slower),
written to benchmarks/results/model_speed.json.

    python benchmarks/model_speed.py [--presets tiny-hybrid,micro-llama --batch 4 --seq 256 --repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine, time_interleaved, write_json  # noqa: E402

from nemotron_elastic.checkpoint import build_model  # noqa: E402
from nemotron_elastic.checkpoint.hf import hf_to_native_state_dict  # noqa: E402
from nemotron_elastic.checkpoint.hf_config import native_to_hf_config  # noqa: E402
from nemotron_elastic.config.presets import get_preset  # noqa: E402


def pair(preset: str):
    """(native, hf) models with identical weights for a preset."""
    cfg = get_preset(preset)
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(native_to_hf_config(cfg), attn_implementation="sdpa")
    hf = hf.float()
    tensors = {k: v.detach().clone() for k, v in hf.state_dict().items()}
    if cfg.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    cfg, state = hf_to_native_state_dict(tensors, cfg, preset)
    native = build_model(cfg, state, dtype=torch.float32)
    return cfg, native, hf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny-hybrid,micro-hybrid,micro-llama")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="model_speed.json")
    args = ap.parse_args()
    transformers.logging.set_verbosity_error()

    results = {}
    for preset in args.presets.split(","):
        cfg, native, hf = pair(preset)
        ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq))
        with torch.no_grad():  # same function before timing it
            diff = (native(ids) - hf(ids).logits).abs().max().item()
        entry = {"params": cfg.num_parameters(), "pattern": cfg.pattern, "max_abs_logit_diff": diff}
        for precision in ("fp32", "bf16_autocast"):
            def ctx():
                if precision == "fp32":
                    return contextlib.nullcontext()
                return torch.autocast("cpu", dtype=torch.bfloat16)

            def forward(model, is_hf):
                def fn():
                    model.eval()
                    with torch.no_grad(), ctx():
                        model(ids)
                return fn

            def train(model, is_hf):
                def fn():
                    model.train()
                    with ctx():
                        out = model(ids)
                        logits = out.logits if is_hf else out
                    torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids.flatten()).backward()
                    model.zero_grad(set_to_none=True)
                return fn

            fwd = time_interleaved({"native": forward(native, False), "hf": forward(hf, True)}, args.repeats)
            step = time_interleaved({"native": train(native, False), "hf": train(hf, True)}, args.repeats)
            tokens = args.batch * args.seq
            entry[precision] = {
                "forward_tokens_per_s": {k: tokens / v for k, v in fwd.items()},
                "train_tokens_per_s": {k: tokens / v for k, v in step.items()},
                "forward_ratio_native_over_hf": fwd["hf"] / fwd["native"],
                "train_ratio_native_over_hf": step["hf"] / step["native"],
            }
            print(f"{preset:<14} {precision:<14} forward x{fwd['hf'] / fwd['native']:.2f}  "
                  f"train x{step['hf'] / step['native']:.2f}  (native / transformers speed)")
        results[preset] = entry
    payload = {"benchmark": "model_speed", "batch": args.batch, "seq": args.seq, "repeats": args.repeats,
               "transformers": transformers.__version__, "results": results, "machine": machine(),
               "goal": "native not slower: every ratio >= 1.0"}
    print(f"written to {write_json(args.out, payload)}")


if __name__ == "__main__":
    main()
