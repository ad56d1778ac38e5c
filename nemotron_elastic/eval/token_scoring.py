# SPDX-License-Identifier: Apache-2.0
"""Scoring token rows for lm-eval's log-likelihood requests: batches cut by length, and one forward pass per
batch through the model with the LM head applied only where targets are (`lm_eval_model.py` drives it)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from ..model.layout import linear
from ..model.masks import ElasticMasks

# Most log-probabilities held at once, positions x vocabulary: 4 MiB of float32 on a CPU (cache-sized; a
# 64 MiB slice made the head + log-softmax about 1.5x slower there), 64 MiB on an accelerator (fewer launches).
LOGIT_ELEMENTS = {"cpu": 1 << 20, "other": 1 << 24}
# Most input tokens (rows x padded length) per forward pass. On a CPU, a batch past about a thousand tokens
# makes the Mamba scan's elementwise tensors fall out of cache: tiny-hybrid's 256-token windows took 3.55 s
# one at a time, 2.89 s at 4 rows and 3.95 s at 16 (2 cores; benchmarks/lm_eval_speed.py); an accelerator
# keeps batch_size rows.
BATCH_TOKENS = {"cpu": 1024, "other": 1 << 20}


def _kind(device: torch.device) -> str:
    return "cpu" if device.type == "cpu" else "other"


def length_batches(lengths: list[int], order: list[int], batch_size: int, device: torch.device) -> Iterator[list[int]]:
    """Cut `order` (request indices, longest first; `lengths` their input lengths in that order) into batches
    of at most `batch_size` rows and BATCH_TOKENS padded tokens, one row at least. The first row of a batch
    is its longest, so it sets the padded length."""
    cap, start = BATCH_TOKENS[_kind(device)], 0
    while start < len(order):
        size = max(1, min(batch_size, cap // max(1, lengths[start])))
        yield order[start : start + size]
        start += size


def score_rows(model: torch.nn.Module, masks: ElasticMasks | None,
               rows: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
    """One forward pass over right-padded rows -> (sum of log p(targets), every target greedy) per row.

    rows: (inputs, targets) token lists; row r's targets are predicted by its last len(targets) inputs. The
    padding lies after them, which a causal model never reads there. Only those positions go through the
    LM head (`model.head_weight(masks)`), in slices of LOGIT_ELEMENTS values, the log-softmax in float32 or
    wider.
    """
    device = next(model.parameters()).device
    batch = torch.zeros(len(rows), max(len(inputs) for inputs, _ in rows), dtype=torch.long)
    for row, (inputs, _) in enumerate(rows):
        batch[row, : len(inputs)] = torch.tensor(inputs, dtype=torch.long)
    hidden = model(batch.to(device), subnet=masks, return_hidden=True)  # (B, T, d)
    sizes = [len(targets) for _, targets in rows]
    row_of = torch.repeat_interleave(torch.arange(len(rows)), torch.tensor(sizes))
    position = torch.cat([torch.arange(len(i) - len(t), len(i)) for i, t in rows])
    picked = hidden[row_of.to(device), position.to(device)]  # (N, d)
    targets = torch.tensor([tok for _, t in rows for tok in t], dtype=torch.long, device=device)
    weight = model.head_weight(masks)  # (V, d)
    step = max(1, LOGIT_ELEMENTS[_kind(device)] // weight.shape[0])
    logprob = [torch.zeros(0, device=device)]  # (a row with no targets: log p 0, greedy)
    greedy = [torch.zeros(0, dtype=torch.bool, device=device)]
    for s in range(0, len(targets), step):
        logits = linear(picked[s : s + step], weight)  # (n, V), as the model's own head computes them
        logp = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
        want = targets[s : s + step]
        logprob.append(logp.gather(-1, want[:, None])[:, 0])
        greedy.append(logp.argmax(-1) == want)
    per_token = torch.cat(logprob).double().cpu().split(sizes)
    hits = torch.cat(greedy).cpu().split(sizes)
    return [(float(lp.sum()), bool(hit.all())) for lp, hit in zip(per_token, hits)]
