# SPDX-License-Identifier: Apache-2.0
"""Mamba2 SSD (state space duality) scan in pure PyTorch.

The selective state space recurrence of a Mamba2 mixer, per head with a scalar decay:

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T        h: (P, N) per head
    y_t = h_t C_t + D * x_t

`ssd_chunked` evaluates it with the chunked SSD algorithm (quadratic "attention-like" form inside a
chunk of `chunk_size` tokens, linear recurrence between chunks); `ssd_step` is one decoding step;
`ssd_naive` is the token-by-token recurrence, kept here as the test reference; `ssd_scan` is the pure-PyTorch
scan (fused kernels are chosen in `kernels.py`).

References:
    Dao & Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured
    State Space Duality", ICML 2024, https://arxiv.org/abs/2405.21060 (section 6, the SSD algorithm).
    Official implementation: mamba_ssm `ops/triton/ssd_combined.py::mamba_chunk_scan_combined` and the
    minimal reference `modules/ssd_minimal.py::ssd_minimal_discrete` (state-spaces/mamba); transformers
    `models/nemotron_h/modeling_nemotron_h.py::mamba2_chunk_scan` (torch path).

Differences from `ssd_minimal` / transformers' torch path: B and C are contracted per group instead of
being repeated to every head (heads are viewed as (g, r) with r = h // g heads per group), sequences of
any length are padded internally, and float64 inputs are computed in float64 throughout.

Shape legend:
    b batch, l sequence length, h Mamba heads, p head dim, g groups (B/C shared by h // g heads),
    r heads per group (h // g), n state size, c number of chunks, q chunk size (positions i, j in a chunk).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import cpu_kernels
from .norm import (
    compute_dtype,  # half-precision inputs are scanned in float32: decays and state sums need the range
)

__all__ = ["ssd_chunked", "ssd_naive", "ssd_scan", "ssd_step"]


def _segsum_exp(a_cs: torch.Tensor) -> torch.Tensor:
    """exp of the causal segment sums of a cumulative log-decay.

    Args:
        a_cs: (..., t) cumulative sums of non-positive log-decays.

    Returns:
        (..., t, t) with out[..., i, j] = exp(a_cs[i] - a_cs[j]) for j <= i and 0 above the diagonal.
        Masking with -inf *before* the exp means the large positive differences above the diagonal are
        never exponentiated (no inf, and no inf * 0 = nan in the backward pass).
    """
    t = a_cs.shape[-1]
    diff = a_cs[..., :, None] - a_cs[..., None, :]  # (..., t, t)
    causal = torch.ones(t, t, dtype=torch.bool, device=a_cs.device).tril()
    return diff.masked_fill(~causal, float("-inf")).exp()


def ssd_chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Chunked SSD scan over a whole sequence (training and prefill).

    Args:
        x: (b, l, h, p) inputs.
        dt: (b, l, h) positive step sizes (softplus(dt + dt_bias), clamped, by the caller).
        A: (h,) negative decay rates (-exp(A_log)).
        B: (b, l, g, n) input projections; head i uses group i // (h // g).
        C: (b, l, g, n) output projections.
        chunk_size: tokens per chunk; any l works (the tail is padded).
        D: (h,) skip connection, or None.
        initial_state: (b, h, p, n) state before the first token, or None (zeros).
        return_final_state: also return the state after the last token.

    Returns:
        y (b, l, h, p) in x.dtype, and, if `return_final_state`, the final state (b, h, p, n) in the
        compute dtype (float32 for half/bfloat16 inputs, else x.dtype).
    """
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    assert h % g == 0, f"heads {h} not divisible by groups {g}"
    r = h // g
    cd = compute_dtype(x.dtype)
    q = min(chunk_size, max(l, 1))  # a chunk longer than the sequence would only add padding work
    c = -(-l // q)
    pad = c * q - l

    x_c, dt_c, B_c, C_c = (t.to(cd) for t in (x, dt, B, C))
    if pad:
        # dt = 0 on padded steps: decay exp(0) = 1 and input 0, so the state passes through unchanged
        # and the final state is the one after token l - 1.
        x_c, B_c, C_c = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x_c, B_c, C_c))
        dt_c = F.pad(dt_c, (0, 0, 0, pad))

    a_cs = (dt_c * A.to(cd)).view(b, c, q, h).permute(0, 3, 1, 2).cumsum(-1)  # (b, h, c, q)
    # a_cs[..., i] = log-decay from the chunk start through step i (<= 0, since dt > 0 and A < 0).

    # Head-major views, so that every contraction below is one batched matmul over (b, g, [r,] c) with
    # dense matrices; the heads of a group share B and C, which are never repeated to every head.
    xdt = (x_c * dt_c[..., None]).view(b, c, q, g, r, p).permute(0, 3, 4, 1, 2, 5)  # (b, g, r, c, q, p)
    B_g = B_c.view(b, c, q, g, n).permute(0, 3, 1, 2, 4)  # (b, g, c, q, n)
    C_g = C_c.view(b, c, q, g, n).permute(0, 3, 1, 2, 4)  # (b, g, c, q, n)

    # 1. Intra-chunk (diagonal blocks): y_i = sum_{j<=i} (C_i . B_j) exp(a_cs_i - a_cs_j) xdt_j.
    cb = C_g @ B_g.transpose(-1, -2)  # (b, g, c, q, q), once per group
    decay_ij = _segsum_exp(a_cs).view(b, g, r, c, q, q)  # (b, g, r, c, q, q), zero above the diagonal
    y = (decay_ij * cb[:, :, None]) @ xdt  # (b, g, r, c, q, p)

    # 2. State contributed by each chunk alone, at its end: sum_j exp(a_cs_end - a_cs_j) xdt_j B_j^T.
    # The r heads of a group are folded into the matmul's columns: (n, q) @ (q, r * p) per (b, g, c).
    decay_end = (a_cs[..., -1:] - a_cs).exp().view(b, g, r, c, q, 1)  # (b, g, r, c, q, 1)
    xdt_end = (xdt * decay_end).permute(0, 1, 3, 4, 2, 5).reshape(b, g, c, q, r * p)  # (b, g, c, q, r*p)
    states = B_g.transpose(-1, -2) @ xdt_end  # (b, g, c, n, r*p)
    states = states.view(b, g, c, n, r, p).permute(0, 1, 4, 2, 5, 3).reshape(b, h, c, p * n)

    # 3. Inter-chunk recurrence, as one small (c+1) x (c+1) decay matrix per head: the state entering
    # chunk z is sum_{s<=z} exp(sum of chunk log-decays s..z-1) * [initial, chunk 0, .., chunk c-1][s].
    # O(c^2) per head, negligible next to step 1 for any c that fits in memory.
    if initial_state is None:
        init = states.new_zeros(b, h, 1, p * n)
    else:
        init = initial_state.to(cd).reshape(b, h, 1, p * n)
    states = torch.cat([init, states], dim=2)  # (b, h, c+1, p*n)
    chunk_cs = F.pad(a_cs[..., -1], (1, 0)).cumsum(-1)  # (b, h, c+1)
    states = _segsum_exp(chunk_cs) @ states  # (b, h, c+1, p*n): entering chunks 0..c-1, then final
    final_state = states[:, :, -1].reshape(b, h, p, n).contiguous()  # own memory, not a view of all states

    # 4. Inter-chunk output (off-diagonal blocks): y_i += exp(a_cs_i) C_i . (state entering the chunk),
    # again with the group's heads in the columns: (q, n) @ (n, r * p) per (b, g, c).
    start = states[:, :, :-1].reshape(b, g, r, c, p, n).permute(0, 1, 3, 5, 2, 4).reshape(b, g, c, n, r * p)
    y_off = (C_g @ start).view(b, g, c, q, r, p).permute(0, 1, 4, 2, 3, 5)  # (b, g, r, c, q, p)
    y = y + y_off * a_cs.exp().view(b, g, r, c, q, 1)

    y = y.permute(0, 3, 4, 1, 2, 5).reshape(b, c * q, h, p)[:, :l]  # (b, l, h, p)
    if D is not None:
        y = y + x_c[:, :l] * D.to(cd)[:, None]
    y = y.to(x.dtype)
    return (y, final_state) if return_final_state else y


def ssd_step(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    inplace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step of the recurrence (the chunked scan with l = 1, without its overhead).

    Args:
        state: (b, h, p, n) state before this token; not modified unless `inplace`.
        x: (b, h, p) input.
        dt: (b, h) positive step size.
        A: (h,) negative decay rates.
        B: (b, g, n), C: (b, g, n) input / output projections.
        D: (h,) skip connection, or None.
        inplace: update `state` in place (when it is in the compute dtype) and return it: the state is the
            largest tensor of a decoding step (h * p * n per row), and not materialising the update and a new
            state halves the memory traffic of a batched step (benchmarks/serve_load.py). A float32 state on
            a CPU is then read and written once by the `ssm_step` kernel (model/cpu_kernels.py) when built.

    Returns:
        y (b, h, p) in x.dtype and the new state (b, h, p, n) in the compute dtype.
    """
    b, h, p = x.shape
    g, n = B.shape[-2:]
    r = h // g
    cd = compute_dtype(x.dtype)
    if inplace and state.dtype == cd and cpu_kernels.ssm_step_applies(state):  # one pass over the state
        return cpu_kernels.ssm_step(state, x, dt, A, B, C, D).to(x.dtype), state
    x_c, dt_c, B_c, C_c = (t.to(cd) for t in (x, dt, B, C))
    decay = (dt_c * A.to(cd)).exp()  # (b, h)
    xdt = (x_c * dt_c[..., None]).view(b, g, r, p)  # (b, g, r, p)
    if inplace and state.dtype == cd:
        new_state = state.mul_(decay[..., None, None])
        new_state.view(b, g, r, p, n).addcmul_(xdt[..., None], B_c.view(b, g, 1, 1, n))
    else:
        update = xdt[..., None] * B_c.view(b, g, 1, 1, n)  # (b, g, r, p, n) outer product, per group
        new_state = state.to(cd) * decay[..., None, None] + update.reshape(b, h, p, n)  # (b, h, p, n)
    y = torch.einsum("bgrpn,bgn->bgrp", new_state.view(b, g, r, p, n), C_c).reshape(b, h, p)
    if D is not None:
        y = y + x_c * D.to(cd)[:, None]
    return y.to(x.dtype), new_state


def ssd_naive(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """TEST REFERENCE ONLY: the token-by-token recurrence, written as plainly as possible.

    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T ;  y_t = h_t C_t + D x_t, with B and C repeated to every
    head. O(l) Python steps; shapes as in `ssd_chunked`.

    Returns:
        y (b, l, h, p) in x.dtype and the final state (b, h, p, n) in the compute dtype.
    """
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    cd = compute_dtype(x.dtype)
    x_c, dt_c, A_c = x.to(cd), dt.to(cd), A.to(cd)
    B_h = B.to(cd).repeat_interleave(h // g, dim=2)  # (b, l, h, n)
    C_h = C.to(cd).repeat_interleave(h // g, dim=2)  # (b, l, h, n)
    state = x_c.new_zeros(b, h, p, n) if initial_state is None else initial_state.to(cd)
    ys = []
    for t in range(l):
        decay = torch.exp(dt_c[:, t] * A_c)[..., None, None]  # (b, h, 1, 1)
        inp = (dt_c[:, t, :, None] * x_c[:, t])[..., None] * B_h[:, t, :, None, :]  # (b, h, p, n)
        state = decay * state + inp
        y_t = (state * C_h[:, t, :, None, :]).sum(-1)  # (b, h, p)
        if D is not None:
            y_t = y_t + D.to(cd)[:, None] * x_c[:, t]
        ys.append(y_t)
    y = torch.stack(ys, dim=1) if ys else x_c.new_zeros(b, 0, h, p)
    return y.to(x.dtype), state


def ssd_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The pure-PyTorch scan a mixer runs without fused kernels: `ssd_chunked` (same arguments and returns).
    Fused kernels on CUDA are chosen explicitly, in `model/kernels.py`."""
    return ssd_chunked(
        x, dt, A, B, C, chunk_size, D=D, initial_state=initial_state, return_final_state=return_final_state
    )
