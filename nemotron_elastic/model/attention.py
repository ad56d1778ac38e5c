# SPDX-License-Identifier: Apache-2.0
"""Grouped-query attention ('*' blocks) via `scaled_dot_product_attention`.

NemotronH attention has no positional encoding; Llama-family attention applies RoPE (rotate-half
convention, base `rope_theta`). Query heads of one KV group are contiguous (head h uses KV head
h // (Hq / Hkv)), which is what lets a sub-network keep a prefix of query heads inside every group.

Shapes: B batch, T new tokens, S all tokens (cache + new), Hq query heads, Hkv KV heads, hd head dim.

Official implementation: transformers `NemotronHAttention`, `LlamaAttention` (+ `apply_rotary_pos_emb`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cache import AttentionState
from .norm import compute_dtype


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables for RoPE at `positions` (T,) -> each (T, hd), in `dtype`.

    Frequencies are computed in float32 (float64 for float64 models), as transformers does.
    """
    cdt = compute_dtype(dtype)
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=cdt) / head_dim))
    freqs = positions.to(cdt)[:, None] * inv_freq[None, :]  # (T, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (T, hd)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE. x: (B, H, T, hd); cos, sin: (T, hd)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    """Args:
        hidden_size: D.
        num_heads: Hq, the elastic query-head count (a multiple of num_kv_heads).
        num_kv_heads: Hkv.
        head_dim: hd (the softmax scale stays 1/sqrt(hd) whatever the head count).
        bias: biases on q/k/v/o.
    """

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int, bias: bool) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        state: AttentionState | None = None,
    ) -> tuple[torch.Tensor, AttentionState | None]:
        """x: (B, T, D); rope: cos, sin (T, hd) for the new tokens' positions, or None (no positional encoding);
        state: the cache of earlier tokens, or None for a stateless forward.
        Returns y (B, T, D) and the updated state (None when `state` is None)."""
        bsz, t, _ = x.shape
        q = self.q_proj(x).view(bsz, t, -1, self.head_dim).transpose(1, 2)  # (B, Hq, T, hd)
        k = self.k_proj(x).view(bsz, t, -1, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        v = self.v_proj(x).view(bsz, t, -1, self.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if state is not None:
            k = torch.cat([state.k, k], dim=2)  # (B, Hkv, S, hd)
            v = torch.cat([state.v, v], dim=2)
            state = AttentionState(k, v)
        past = k.shape[2] - t
        mask, causal = None, past == 0 and t > 1
        if past > 0 and t > 1:  # new tokens attend to all cached ones and causally among themselves
            mask = torch.arange(k.shape[2], device=x.device)[None, :] <= past + torch.arange(t, device=x.device)[:, None]
        groups = q.shape[1] // k.shape[1]
        if groups > 1:  # (B, Hkv, S, hd) -> (B, Hq, S, hd); the expanded copy is faster than enable_gqa on CPU
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)  # (B, Hq, T, hd)
        return self.o_proj(y.transpose(1, 2).reshape(bsz, t, -1)), state
