# SPDX-License-Identifier: Apache-2.0
"""Grouped-query attention ('*' blocks) via `scaled_dot_product_attention`.

NemotronH attention has no positional encoding; Llama-family attention applies RoPE (rotate-half
convention; the tables, plain or scaled, come from `rope.py`). Query heads of one KV group are contiguous
(head h uses KV head h // (Hq / Hkv)), which is what lets a sub-network keep a prefix of query heads inside
every group. Family extras: q/k/v biases without an o_proj bias (Qwen2), an RMSNorm over head_dim of each q
and k head before RoPE (Qwen3: one weight shared by all heads, so cutting heads leaves it whole), a sliding
window (Mistral: a query sees the keys at most `window - 1` positions back; the cache keeps every token and
the mask hides the old ones).

Shapes: B batch, T new tokens, S all tokens (cache + new), Hq query heads, Hkv KV heads, hd head dim.

Official implementation: transformers `NemotronHAttention`, `LlamaAttention` (+ `apply_rotary_pos_emb`),
`Qwen2Attention`, `Qwen3Attention`, `MistralAttention`, `masking_utils.sliding_window_overlay`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .batch_cache import KVRows
from .decode import AttentionState
from .layout import Kept, Linear, Select, attention_indices, keeps_runs, kept, sub_linear
from .masks import Axis
from .norm import RMSNorm, compute_dtype


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
        bias: biases on q/k/v (and o unless `out_bias` says otherwise).
        out_bias: o_proj's bias; None: as `bias`.
        qk_norm_eps: when set, q_norm / k_norm (RMSNorm over hd, this epsilon) on every head before RoPE.
        window: sliding window length, or None for full causal attention.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        bias: bool,
        out_bias: bool | None = None,
        qk_norm_eps: float | None = None,
        window: int | None = None,
    ) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.window = window
        self._kept: dict[tuple, Kept] = {}  # (heads per KV group, device) -> kept q rows, for inference
        self.q_proj = Linear(hidden_size, num_heads * head_dim, bias=bias)
        self.k_proj = Linear(hidden_size, num_kv_heads * head_dim, bias=bias)
        self.v_proj = Linear(hidden_size, num_kv_heads * head_dim, bias=bias)
        out_bias = bias if out_bias is None else out_bias
        self.o_proj = Linear(num_heads * head_dim, hidden_size, bias=out_bias)
        if qk_norm_eps is not None:
            self.q_norm, self.k_norm = RMSNorm(head_dim, qk_norm_eps), RMSNorm(head_dim, qk_norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def empty_state(self, batch: int, like: torch.Tensor) -> AttentionState:
        """A cache with no tokens yet, in `like`'s dtype and device."""
        empty = like.new_zeros(batch, self.num_kv_heads, 0, self.head_dim)
        return AttentionState(empty, empty)

    def _q_rows(self, per_group: int, device: torch.device) -> Select:
        """The q rows / o_proj columns of the first `per_group` query heads of every KV group: plain indices
        while training, indices with their runs (worked out once per sub-model) for inference."""
        if not keeps_runs():
            return attention_indices(self.num_heads, self.num_kv_heads, self.head_dim, per_group, device)[1]
        key = (per_group, torch.device(device))
        if key not in self._kept:
            _, rows = attention_indices(self.num_heads, self.num_kv_heads, self.head_dim, per_group, device)
            self._kept[key] = kept(rows)
        return self._kept[key]

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        state: AttentionState | KVRows | None = None,
        width: Axis | None = None,
    ) -> tuple[torch.Tensor, AttentionState | KVRows | None]:
        """x: (B, T, d), d <= D when the hidden axis is sliced; rope: cos, sin (T, hd) for the new tokens'
        positions, or None (no positional encoding); state: the cache of earlier tokens, or None for a
        stateless forward; width: query heads kept *per KV group* (their `factor()` multiplies the kept heads'
        outputs), or None for all heads. KV heads are never cut. A `KVRows` state is a batch of rows at their
        own positions (model/batch_cache.py): rope is then (B, 1, T, hd) and the mask per row; in a packed
        step (`RowStep.packed`) x holds its real tokens, (N, 1, d), and so does the result.
        Returns y (B, T, d) and the updated state (None when `state` is None)."""
        bsz, t, d = x.shape
        step = state.step if isinstance(state, KVRows) and state.step.packed else None  # x: (N, 1, d)
        if step is not None:
            bsz, t = step.counts.shape[0], step.width
        per_group = self.num_heads // self.num_kv_heads
        q_rows: Select = self.num_heads * self.head_dim
        if width is not None and width.size != per_group:
            q_rows = self._q_rows(width.size, x.device)

        def heads(y: torch.Tensor) -> torch.Tensor:  # (., ., H*hd) -> (B, H, T, hd)
            y = y if step is None else step.unpack(y)
            return y.view(bsz, t, -1, self.head_dim).transpose(1, 2)

        q = heads(sub_linear(x, self.q_proj, q_rows, d))  # (B, Hq, T, hd)
        k = heads(sub_linear(x, self.k_proj, self.k_proj.out_features, d))
        v = heads(sub_linear(x, self.v_proj, self.v_proj.out_features, d))
        if self.q_norm is not None:  # per head over hd: the kept heads are normalised as in the parent
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)  # (B, Hkv, T, hd)
        if isinstance(state, KVRows):
            k, v = state.kv.update(k, v, state.step)  # (B, Hkv, S, hd), each row's keys at its positions
            mask, causal = state.step.attention_mask(self.window), False
        else:
            if state is not None:
                k = torch.cat([state.k, k], dim=2)  # (B, Hkv, S, hd)
                v = torch.cat([state.v, v], dim=2)
                state = AttentionState(k, v)
            mask, causal = attention_mask(t, k.shape[2], self.window, x.device)
        y = attend(q, k, v, mask, causal).transpose(1, 2)  # (B, T, h, hd)
        if step is not None:
            y = step.pack(y)  # (N, 1, h, hd): a packed step's tokens, each a row of its own
        factor = None if width is None else width.factor()
        if factor is not None and factor.dim() <= 1:  # per kept head, the same factor in every KV group
            factor = factor.expand(width.size) if factor.dim() == 0 else factor
            y = y * factor.repeat(self.num_kv_heads).to(y.dtype)[None, None, :, None]
        elif factor is not None:  # per row (R, 1, per group): rows of different sub-models in one batch
            per_row = factor.reshape(factor.shape[0], -1).repeat(1, self.num_kv_heads)  # (R, h)
            y = y * per_row.to(y.dtype)[:, None, :, None]
        y = y.reshape(*y.shape[:2], -1)  # (B, T, h*hd) or (N, 1, h*hd)
        return sub_linear(y, self.o_proj, d, q_rows), state


def attention_mask(t: int, s: int, window: int | None, device) -> tuple[torch.Tensor | None, bool]:
    """The mask of T new tokens over S = cached + new keys: (None, is_causal) when SDPA's own causal flag or
    no mask does, else a boolean (T, S) mask, True where attended. A window hides keys `window` or more
    positions back (transformers' sliding_window_overlay); it changes nothing while S <= window."""
    past = s - t
    windowed = window is not None and s > window
    if not windowed and (past == 0 or t == 1):
        return None, past == 0 and t > 1
    # new tokens attend to the cached ones and causally among themselves, within the window if any
    q_pos = past + torch.arange(t, device=device)[:, None]  # (T, 1)
    k_pos = torch.arange(s, device=device)[None, :]  # (1, S)
    mask = k_pos <= q_pos
    if windowed:
        mask = mask & (k_pos > q_pos - window)
    return mask, False


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
    """SDPA of q (B, Hq, T, hd) over k, v (B, Hkv, S, hd), each KV head serving Hq / Hkv query heads.

    On CUDA, and on a CPU without grad (inference), SDPA shares the KV heads itself (`enable_gqa`): no copy
    of K and V per query head (a CPU decoding step over a 200-token cache: 0.24 ms against 4 ms with the
    copies). CPU training repeats K and V per query head first, as before: the forward is bit for bit the
    same either way, but `enable_gqa`'s backward sums the K / V gradients in another order (measured: 1e-6
    in fp32, 0.3 under bf16 autocast), which would change every CPU training run's numbers."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1 and not q.is_cuda and torch.is_grad_enabled():  # (B, Hkv, S, hd) -> (B, Hq, S, hd)
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                          enable_gqa=q.shape[1] != k.shape[1])
