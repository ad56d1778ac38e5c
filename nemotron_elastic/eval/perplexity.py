# SPDX-License-Identifier: Apache-2.0
"""Perplexity of a causal LM on one long token stream.

The stream is cut into windows of at most `seq_len` tokens, and every window is one row of a batch:

- non-overlapping (`stride=None` or `stride == seq_len`): windows [0, L), [L, 2L), ...; inside a window
  every token but the first is scored, so the first token of each window is never predicted;
- sliding (`stride < seq_len`): windows start every `stride` tokens and each scores only the tokens the
  previous window did not, so every token after the first is scored exactly once, with up to
  `seq_len - 1` tokens of context. This is the strided recipe of the transformers perplexity guide
  (https://huggingface.co/docs/transformers/perplexity), with the exact token count instead of its
  per-window approximation.

Perplexity is exp(mean NLL) over the scored tokens. Log-softmax runs in float32 (float64 for a float64
model) whatever the model dtype or autocast, so bf16 models are compared to fp32 ones on the same footing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


@dataclass(frozen=True)
class Window:
    """One row of the evaluation: tokens [begin, end) are the input, [first_target, end) are scored."""

    begin: int
    end: int
    first_target: int  # > begin: a scored token always has at least one token of context


def plan_windows(num_tokens: int, seq_len: int, stride: int | None = None) -> list[Window]:
    """The windows that score a stream of `num_tokens` tokens (see the module docstring).

    Args:
        num_tokens: length of the token stream (>= 2).
        seq_len: the longest window (>= 2).
        stride: distance between window starts; None means `seq_len` (non-overlapping).

    Returns:
        Windows in stream order; none of them is empty of targets.
    """
    if num_tokens < 2:
        raise ValueError(f"perplexity needs at least 2 tokens, got {num_tokens}")
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    stride = seq_len if stride is None else stride
    if not 1 <= stride <= seq_len:
        raise ValueError(f"stride must be in [1, seq_len={seq_len}], got {stride}")
    windows = []
    scored_until = 1  # token 0 has no context and is never scored
    for begin in range(0, num_tokens, stride):
        end = min(begin + seq_len, num_tokens)
        first = max(scored_until, begin + 1)
        if first < end:  # a trailing 1-token window scores nothing
            windows.append(Window(begin, end, first))
        scored_until = end
        if end == num_tokens:
            break
    return windows


def _logits(model: torch.nn.Module, input_ids: torch.Tensor, forward_kwargs: dict[str, Any]) -> torch.Tensor:
    out = model(input_ids, **forward_kwargs)
    # A native HybridLM returns the logits tensor, a transformers model an output object.
    return out if isinstance(out, torch.Tensor) else out.logits


@torch.no_grad()
def token_nll(
    model: torch.nn.Module,
    token_ids: torch.Tensor,
    seq_len: int = 512,
    batch_size: int = 4,
    stride: int | None = None,
    progress: bool = False,
    subnet: Any = None,
) -> torch.Tensor:
    """Negative log-likelihood of every scored token of a stream.

    Args:
        model: causal LM; `model(input_ids (B, T))` returns logits (B, T, V) or an object with `.logits`.
        token_ids: (N,) long, the token stream.
        seq_len: longest window fed to the model.
        batch_size: windows per forward pass. The last window may be shorter; it is right-padded, which
            a causal model cannot see from the scored positions.
        stride: None (non-overlapping windows) or the sliding-window stride (1..seq_len).
        progress: show a tqdm bar (stderr).
        subnet: forwarded as `model(..., subnet=subnet)` when not None (a sub-model of an elastic parent).

    Returns:
        (N,) float64 on CPU: entry i is -log p(token_i | context), NaN for tokens that are not scored
        (token 0, and with non-overlapping windows the first token of every window).
    """
    if token_ids.ndim != 1:
        raise ValueError(f"token_ids must be 1-D (N,), got shape {tuple(token_ids.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    windows = plan_windows(token_ids.numel(), seq_len, stride)
    device = next(model.parameters()).device
    forward_kwargs = {} if subnet is None else {"subnet": subnet}
    tokens = token_ids.to(device=device, dtype=torch.long)
    nll = torch.full((token_ids.numel(),), float("nan"), dtype=torch.float64)
    was_training = model.training
    model.eval()
    bar = tqdm(
        total=sum(w.end - w.first_target for w in windows),
        desc="perplexity",
        unit="tok",
        disable=not progress,
    )
    try:
        for start in range(0, len(windows), batch_size):
            group = windows[start : start + batch_size]
            width = max(w.end - w.begin for w in group)
            batch = torch.zeros(len(group), width, dtype=torch.long, device=device)  # (B, T), pad id 0
            for row, w in enumerate(group):
                batch[row, : w.end - w.begin] = tokens[w.begin : w.end]
            logits = _logits(model, batch, forward_kwargs)  # (B, T, V)
            # at least float32 (bf16 / fp16 logits are upcast; a float64 model keeps float64)
            score_dtype = torch.promote_types(logits.dtype, torch.float32)
            for row, w in enumerate(group):
                # logits at position p predict token p + 1: the scored targets are [first_target, end)
                lo, hi = w.first_target - w.begin - 1, w.end - w.begin - 1
                row_logits = logits[row, lo:hi].to(score_dtype)  # (n, V): one row at a time bounds the memory
                targets = tokens[w.first_target : w.end]
                nll[w.first_target : w.end] = F.cross_entropy(row_logits, targets, reduction="none").cpu()
                bar.update(w.end - w.first_target)
            del logits
    finally:
        bar.close()
        model.train(was_training)
    return nll


def perplexity(
    model: torch.nn.Module,
    token_ids: torch.Tensor,
    seq_len: int = 512,
    batch_size: int = 4,
    stride: int | None = None,
    progress: bool = False,
    subnet: Any = None,
) -> float:
    """exp(mean next-token NLL) of `model` on the stream `token_ids` (N,).

    Arguments as in `token_nll`. With `stride=None` the windows do not overlap; with `stride < seq_len`
    every token after the first is scored once with up to `seq_len - 1` tokens of context (lower, and
    slower, than non-overlapping windows of the same `seq_len`).

    Raises:
        ValueError: fewer than 2 tokens, or an invalid seq_len / stride / batch_size.
    """
    nll = token_nll(model, token_ids, seq_len, batch_size, stride, progress, subnet)
    scored = nll[~nll.isnan()]
    return math.exp(scored.mean().item())
