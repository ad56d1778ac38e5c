# SPDX-License-Identifier: Apache-2.0
"""Numerical kernels of the exported elastic hybrid model: RMS norms and the Mamba2 SSD scan (pure PyTorch).

This file is copied into heterogeneous Hugging Face exports written by nemotron-elastic and loaded with
`trust_remote_code=True`. It needs only torch. The math is that of the nemotron_elastic package (model/norm.py,
model/ssd.py), kept operation for operation so that the export computes the same function as the native model.

Recurrence per head (scalar decay): h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T ;  y_t = h_t C_t + D x_t.

References:
    Dao & Gu, "Transformers are SSMs", ICML 2024, https://arxiv.org/abs/2405.21060 (section 6, SSD).
    Official implementation: mamba_ssm `modules/ssd_minimal.py`; transformers `modeling_nemotron_h.py`.

Shape legend: b batch, l length, h heads, p head dim, g B/C groups, r = h // g heads per group, n state size,
c chunks, q chunk size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Reductions and scans run in float32 for half types, else in the input's own dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """weight * x / sqrt(mean(x^2) + eps) over the last dim, weight applied before the cast back."""
    dtype = x.dtype
    x = x.to(compute_dtype(dtype))
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return (weight.to(x.dtype) * x).to(dtype)


def gated_group_rms_norm(
    x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, num_groups: int, eps: float
) -> torch.Tensor:
    """Mamba2's output norm: weight * groupnorm(x * silu(z)), the RMS taken over each contiguous channel group.

    x, z: (..., C); weight: (C,). Cast back to x's dtype *before* the weight multiply, as transformers does.
    """
    dtype = x.dtype
    cdt = compute_dtype(dtype)
    x = x.to(cdt) * F.silu(z.to(cdt))
    *lead, dim = x.shape
    xg = x.view(*lead, num_groups, dim // num_groups)  # (..., G, C/G)
    xg = xg * torch.rsqrt(xg.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xg.reshape(*lead, dim).to(dtype)


def _segsum_exp(a_cs: torch.Tensor) -> torch.Tensor:
    """(..., t) cumulative log-decays -> (..., t, t) exp(a_cs[i] - a_cs[j]) for j <= i, 0 above the diagonal.

    Masking with -inf before the exp keeps the large positive differences above the diagonal from overflowing.
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked SSD scan over a whole sequence.

    Args:
        x: (b, l, h, p) inputs; dt: (b, l, h) positive steps; A: (h,) negative decays.
        B, C: (b, l, g, n) input / output projections; head i reads group i // (h // g).
        chunk_size: tokens per chunk (speed only; any l works, the tail is padded).
        D: (h,) skip connection or None; initial_state: (b, h, p, n) or None (zeros).

    Returns:
        y (b, l, h, p) in x.dtype, and the state after the last token (b, h, p, n) in the compute dtype.
    """
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    r = h // g
    cd = compute_dtype(x.dtype)
    q = min(chunk_size, max(l, 1))
    c = -(-l // q)
    pad = c * q - l
    x_c, dt_c, B_c, C_c = (t.to(cd) for t in (x, dt, B, C))
    if pad:  # dt = 0 on padded steps: decay 1 and no input, so the state passes through unchanged
        x_c, B_c, C_c = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x_c, B_c, C_c))
        dt_c = F.pad(dt_c, (0, 0, 0, pad))

    a_cs = (dt_c * A.to(cd)).view(b, c, q, h).permute(0, 3, 1, 2).cumsum(-1)  # (b, h, c, q)
    xdt = (x_c * dt_c[..., None]).view(b, c, q, g, r, p).permute(0, 3, 4, 1, 2, 5)  # (b, g, r, c, q, p)
    B_g = B_c.view(b, c, q, g, n).permute(0, 3, 1, 2, 4)  # (b, g, c, q, n)
    C_g = C_c.view(b, c, q, g, n).permute(0, 3, 1, 2, 4)  # (b, g, c, q, n)

    # 1. within each chunk: y_i = sum_{j<=i} (C_i . B_j) exp(a_cs_i - a_cs_j) xdt_j
    cb = C_g @ B_g.transpose(-1, -2)  # (b, g, c, q, q)
    decay_ij = _segsum_exp(a_cs).view(b, g, r, c, q, q)
    y = (decay_ij * cb[:, :, None]) @ xdt  # (b, g, r, c, q, p)

    # 2. the state each chunk alone leaves at its end, the group's heads folded into the columns
    decay_end = (a_cs[..., -1:] - a_cs).exp().view(b, g, r, c, q, 1)
    xdt_end = (xdt * decay_end).permute(0, 1, 3, 4, 2, 5).reshape(b, g, c, q, r * p)  # (b, g, c, q, r*p)
    states = B_g.transpose(-1, -2) @ xdt_end  # (b, g, c, n, r*p)
    states = states.view(b, g, c, n, r, p).permute(0, 1, 4, 2, 5, 3).reshape(b, h, c, p * n)

    # 3. between chunks: the state entering chunk z, as one (c+1) x (c+1) decay matrix per head
    init = (
        states.new_zeros(b, h, 1, p * n)
        if initial_state is None
        else initial_state.to(cd).reshape(b, h, 1, p * n)
    )
    states = torch.cat([init, states], dim=2)  # (b, h, c+1, p*n)
    chunk_cs = F.pad(a_cs[..., -1], (1, 0)).cumsum(-1)  # (b, h, c+1)
    states = _segsum_exp(chunk_cs) @ states
    final_state = states[:, :, -1].reshape(b, h, p, n).contiguous()

    # 4. the entering state's contribution inside each chunk
    start = states[:, :, :-1].reshape(b, g, r, c, p, n).permute(0, 1, 3, 5, 2, 4).reshape(b, g, c, n, r * p)
    y_off = (C_g @ start).view(b, g, c, q, r, p).permute(0, 1, 4, 2, 3, 5)  # (b, g, r, c, q, p)
    y = y + y_off * a_cs.exp().view(b, g, r, c, q, 1)

    y = y.permute(0, 3, 4, 1, 2, 5).reshape(b, c * q, h, p)[:, :l]  # (b, l, h, p)
    if D is not None:
        y = y + x_c[:, :l] * D.to(cd)[:, None]
    return y.to(x.dtype), final_state


def ssd_step(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step. state: (b, h, p, n); x: (b, h, p); dt: (b, h); B, C: (b, g, n).

    Returns y (b, h, p) in x.dtype and the new state (b, h, p, n) in the compute dtype.
    """
    b, h, p = x.shape
    g, n = B.shape[-2:]
    r = h // g
    cd = compute_dtype(x.dtype)
    x_c, dt_c, B_c, C_c = (t.to(cd) for t in (x, dt, B, C))
    decay = (dt_c * A.to(cd)).exp()  # (b, h)
    xdt = (x_c * dt_c[..., None]).view(b, g, r, p)
    update = xdt[..., None] * B_c.view(b, g, 1, 1, n)  # (b, g, r, p, n)
    new_state = state.to(cd) * decay[..., None, None] + update.reshape(b, h, p, n)
    y = torch.einsum("bgrpn,bgn->bgrp", new_state.view(b, g, r, p, n), C_c).reshape(b, h, p)
    if D is not None:
        y = y + x_c * D.to(cd)[:, None]
    return y.to(x.dtype), new_state
