# SPDX-License-Identifier: Apache-2.0
"""Distillation and language-modelling losses, in float32, optionally in chunks of tokens.

Forward KL from the frozen teacher (docs/METHOD.md 8.1): KL(p_t || p_s) = sum_v p_t (log p_t - log p_s) at
temperature T on both sides, times T^2 (so gradients keep their scale across T; T = 1 in the paper).

Chunked form: the LM head is applied inside the loss, one chunk of tokens at a time, under activation
checkpointing, so neither the student's nor the teacher's full (N, V) logits are ever held (in fp32 or at
all): peak extra memory is O(chunk * V) instead of O(N * V) twice. It computes the same value and gradients
as the plain form (a test checks it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def kl_div(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
           mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over tokens of KL(p_teacher || p_student). logits: (..., V); mask: (...) bool of tokens to count."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    per_token = (t.exp() * (t - s)).sum(-1) * temperature**2  # (...)
    if mask is None:
        return per_token.mean()
    return (per_token * mask).sum() / mask.sum().clamp_min(1)


def kl_chunk_sum(s_hidden, s_head, t_hidden, t_head, temperature: float, mask) -> torch.Tensor:
    """Summed forward KL of one chunk of tokens (the unit `kl_div_chunked` recomputes in backward)."""
    s = F.log_softmax(F.linear(s_hidden, s_head).float() / temperature, dim=-1)
    with torch.no_grad():
        t = F.log_softmax(F.linear(t_hidden, t_head).float() / temperature, dim=-1)
    per_token = (t.exp() * (t - s)).sum(-1) * temperature**2
    return (per_token * mask).sum()


def kl_div_chunked(
    student_hidden: torch.Tensor,
    student_head: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_head: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """kl_div(student_hidden @ student_head.T, teacher_hidden @ teacher_head.T), chunk by chunk.

    Args:
        student_hidden: (..., d) the student's LM-head input (`model(ids, return_hidden=True)`).
        student_head: (V, d) the student's head weight (`model.head_weight(subnet)`).
        teacher_hidden: (..., D) the teacher's, computed without grad.
        teacher_head: (V, D).
        mask: (...) bool of tokens to count (None: all).
    Returns: () the mean over counted tokens.
    """
    s_h = student_hidden.reshape(-1, student_hidden.shape[-1])  # (N, d)
    t_h = teacher_hidden.reshape(-1, teacher_hidden.shape[-1]).detach()  # (N, D)
    m = torch.ones(s_h.shape[0], device=s_h.device) if mask is None else mask.reshape(-1).to(s_h.device).float()
    total = s_h.new_zeros((), dtype=torch.float32)
    for start in range(0, s_h.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        if torch.is_grad_enabled() and (s_h.requires_grad or student_head.requires_grad):
            # recompute this chunk's logits in backward instead of keeping them
            total = total + checkpoint(
                kl_chunk_sum, s_h[sl], student_head, t_h[sl], teacher_head, temperature, m[sl], use_reentrant=False
            )
        else:
            total = total + kl_chunk_sum(s_h[sl], student_head, t_h[sl], teacher_head, temperature, m[sl])
    return total / m.sum().clamp_min(1)


def cross_entropy_chunked(hidden: torch.Tensor, head: torch.Tensor, targets: torch.Tensor, chunk_size: int = 1024,
                          ignore_index: int = -100) -> torch.Tensor:
    """Mean next-token cross-entropy of logits = hidden @ head.T against targets, chunk by chunk.
    hidden: (..., d); head: (V, d); targets: (...) long."""
    h = hidden.reshape(-1, hidden.shape[-1])
    y = targets.reshape(-1)
    total = h.new_zeros((), dtype=torch.float32)
    count = (y != ignore_index).sum().clamp_min(1)

    def chunk_sum(h_c, y_c):
        return F.cross_entropy(F.linear(h_c, head).float(), y_c, ignore_index=ignore_index, reduction="sum")

    for start in range(0, h.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        if torch.is_grad_enabled() and (h.requires_grad or head.requires_grad):
            total = total + checkpoint(chunk_sum, h[sl], y[sl], use_reentrant=False)
        else:
            total = total + chunk_sum(h[sl], y[sl])
    return total / count
