# SPDX-License-Identifier: Apache-2.0
"""The in-process part of benchmarks/serve_load.py: the batched decoder next to its alternatives.

- `gemm_scaling`: one linear layer at 1 to 32 rows (float32, bfloat16), F.linear next to the model's `linear`: the most
  batching can gain.
- `kv_kinds`: the padded and the paged KV cache (model/batch_cache.py) decoding 8 and 16 rows: tokens/s
  and the bytes the caches hold (padding / whole blocks included), interleaved repeats, medians.
- `mixed_strategies`: rows of three budgets decoded with one sliced forward per budget (group) vs one
  forward at the parent's width with per-row masks (widest).
- `lm_eval_generate`: lm-eval's `generate_until` one request at a time (batch_size 1) vs batched
  (batch_size 8), each row leaving at its stop string: seconds, and whether the outputs are the same.
- `hf_generate`: our batched `generate` vs transformers' batched `generate` of the exported HF checkpoint,
  greedy, the same prompts (cut to one length, so neither side pads), EOS ignored: tokens/s and how many
  rows agree token for token.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from nemotron_elastic.model.batch_cache import KV_KINDS
from nemotron_elastic.model.batcher import ContinuousBatcher, SequenceRequest


def _decode_run(model, kind: str, rows: int, tokens: int, specs=(None,), mixed: str = "group") -> tuple[float, int]:
    """Decode `rows` requests of 24-token prompts for `tokens` tokens, cycling through the sub-models `specs`
    -> (tokens/s, peak cache bytes)."""
    batcher = ContinuousBatcher(model, kv_cache=kind, mixed=mixed)
    for i in range(rows):
        batcher.submit(SequenceRequest([(7 * i + j) % 4000 + 3 for j in range(24)], tokens, specs[i % len(specs)]))
    batcher.step()  # prefill (and the first token) is not decoding speed
    start, produced, peak = time.perf_counter(), 0, 0
    while batcher.has_work():
        produced += sum(e.token is not None for e in batcher.step())
        peak = max(peak, batcher.cache_bytes())
    return produced / (time.perf_counter() - start), peak


def gemm_scaling(hidden: int, repeats: int = 200) -> dict[str, Any]:
    """What batching can gain at most on this CPU: one (4 hidden x hidden) linear layer at 1 / 4 / 8 / 16 / 32
    rows, float32 and bfloat16: milliseconds per call and rows per millisecond relative to one row, for
    F.linear (x @ W^T) and for the model's `linear` (model/layout.py: W @ x^T for 8..64 rows without grad,
    float32 / bfloat16 weights above a size), interleaved call by call so both see the same machine state."""
    from nemotron_elastic.model.layout import linear

    forms = {"f_linear": torch.nn.functional.linear, "model_linear": linear}
    out: dict[str, Any] = {}
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16):
            weight = torch.randn(4 * hidden, hidden).to(dtype)
            times: dict[str, dict[int, float]] = {name: {} for name in forms}
            for rows in (1, 4, 8, 16, 32):
                x = torch.randn(rows, hidden).to(dtype)
                spent = dict.fromkeys(forms, 0.0)
                for i in range(repeats + 10):
                    for name, fn in forms.items():
                        start = time.perf_counter()
                        fn(x, weight)
                        if i >= 10:  # warm-up calls are not timed
                            spent[name] += time.perf_counter() - start
                for name in forms:
                    times[name][rows] = spent[name] / repeats * 1e3
            key = str(dtype).removeprefix("torch.")
            out[key] = {name: {"ms": {str(r): t for r, t in ts.items()},
                               "throughput_over_1_row": {str(r): r * ts[1] / t for r, t in ts.items()}}
                        for name, ts in times.items()}
            out[key]["f_linear_over_model_linear_ms"] = {
                str(r): times["f_linear"][r] / times["model_linear"][r] for r in times["f_linear"]}
    return out


def kv_kinds(model, tokens: int, repeats: int = 3) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rows in (8, 16):
        runs: dict[str, list[tuple[float, int]]] = {k: [] for k in KV_KINDS}
        for _ in range(repeats):
            for kind in KV_KINDS:
                runs[kind].append(_decode_run(model, kind, rows, tokens))
        out[str(rows)] = {kind: {"tokens_per_s": statistics.median(r[0] for r in v),
                                 "peak_cache_bytes": max(r[1] for r in v)} for kind, v in runs.items()}
        out[str(rows)]["paged_over_padded_speed"] = out[str(rows)]["paged"]["tokens_per_s"] / out[str(rows)][
            "padded"]["tokens_per_s"]
    return out


def mixed_strategies(model, specs: dict, tokens: int, repeats: int = 3) -> dict[str, Any]:
    """Rows of budgets 1.0 / 0.75 / 0.5 in turn: one sliced forward per budget (group) vs one forward at the
    parent's width with per-row masks (widest): decode tokens/s, interleaved repeats, medians."""
    mix = [None if b == 1.0 else s for b, s in sorted(specs.items(), reverse=True)]
    out: dict[str, Any] = {}
    for rows in (3, 8, 16):
        runs: dict[str, list[float]] = {"group": [], "widest": []}
        for _ in range(repeats):
            for mixed in runs:
                runs[mixed].append(_decode_run(model, "padded", rows, tokens, mix, mixed)[0])
        out[str(rows)] = {m: statistics.median(v) for m, v in runs.items()}
        out[str(rows)]["widest_over_group"] = out[str(rows)]["widest"] / out[str(rows)]["group"]
    return out


def lm_eval_generate(model_dir: Path, tokens: int, count: int = 16) -> dict[str, Any]:
    from lm_eval.api.instance import Instance

    from nemotron_elastic.data import heldout_text
    from nemotron_elastic.eval.lm_eval_model import NemotronElasticLM

    paragraphs = [p for p in heldout_text().split("\n\n") if len(p) > 80][:count]
    requests = [Instance(request_type="generate_until", doc={}, idx=i,
                         arguments=(p[:200], {"until": ["."], "max_gen_toks": tokens}))
                for i, p in enumerate(paragraphs)]
    out: dict[str, Any] = {"requests": len(requests), "max_gen_toks": tokens, "until": ["."]}
    texts = {}
    for batch in (1, 8):
        lm = NemotronElasticLM(path=str(model_dir), budget=1.0, batch_size=batch, max_length=512)
        start = time.perf_counter()
        texts[batch] = lm.generate_until(requests, disable_tqdm=True)
        out[f"batch{batch}_seconds"] = time.perf_counter() - start
        out[f"batch{batch}_generated_tokens"] = lm.generated_tokens
    out["speedup"] = out["batch1_seconds"] / out["batch8_seconds"]
    out["same_outputs"] = texts[1] == texts[8]
    return out


def hf_generate(model, model_dir: Path, work: Path, tokens: int, rows: int = 8, repeats: int = 2) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    from nemotron_elastic.checkpoint.hf import save_hf
    from nemotron_elastic.data import heldout_text
    from nemotron_elastic.io import load_tokenizer

    tok = load_tokenizer(model_dir)
    save_hf(model, work / "hf", tok)
    hf = AutoModelForCausalLM.from_pretrained(work / "hf", dtype=torch.float32).eval()
    encoded = [tok(p)["input_ids"] for p in heldout_text().split("\n\n") if len(p) > 200][:rows]
    length = min(len(e) for e in encoded + [[0] * 48])
    ids = torch.tensor([e[:length] for e in encoded])
    times: dict[str, list[float]] = {"ours": [], "transformers": []}
    outs = {}
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            outs["ours"] = model.generate(ids, tokens)
            times["ours"].append(time.perf_counter() - start)
            start = time.perf_counter()
            outs["transformers"] = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                               min_new_tokens=tokens, do_sample=False, pad_token_id=0)
            times["transformers"].append(time.perf_counter() - start)
    seconds = {k: statistics.median(v) for k, v in times.items()}
    agree = sum(bool((outs["ours"][b] == outs["transformers"][b]).all()) for b in range(rows))
    return {"rows": rows, "prompt_tokens": length, "new_tokens": tokens,
            "tokens_per_s": {k: rows * tokens / v for k, v in seconds.items()},
            "ours_over_transformers": seconds["transformers"] / seconds["ours"],
            "rows_identical": agree}


def compare_all(model, specs, model_dir: Path, tokens: int, work: Path) -> dict[str, Any]:
    out = {"gemm_scaling": gemm_scaling(model.config.hidden_size)}
    print(f"gemm scaling: {out['gemm_scaling']}", flush=True)
    out["kv_cache_kinds"] = kv_kinds(model, tokens)
    print(f"kv kinds: {out['kv_cache_kinds']}", flush=True)
    out["mixed_budget_strategies"] = mixed_strategies(model, specs, tokens)
    print(f"mixed budgets: {out['mixed_budget_strategies']}", flush=True)
    out["lm_eval_generate_until"] = lm_eval_generate(model_dir, tokens)
    print(f"lm-eval generate_until: {out['lm_eval_generate_until']}", flush=True)
    out["transformers_generate"] = hf_generate(model, model_dir, work, tokens)
    print(f"transformers generate: {out['transformers_generate']}", flush=True)
    return out
