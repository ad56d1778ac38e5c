# SPDX-License-Identifier: Apache-2.0
"""RMSNorm and the Mamba2 grouped gated RMSNorm.

Both normalise in float32 (float64 stays float64), multiply by the weight in that precision and cast back,
as transformers' `NemotronHRMSNorm` / `NemotronHRMSNormGated` do, so that imported checkpoints reproduce the
reference logits.

Official implementation: transformers `models/nemotron_h/modeling_nemotron_h.py`
(`NemotronHRMSNorm`, `NemotronHRMSNormGated`); mamba_ssm `ops/triton/layernorm_gated.py` (norm_before_gate=False).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu_kernels


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision reductions run in: float32 for half types, else the input's own dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _mean_square(x: torch.Tensor, support: torch.Tensor | None) -> torch.Tensor:
    """Mean of x^2 over the last dim, or its `support`-weighted mean (masked channels excluded)."""
    if support is None:
        return x.pow(2).mean(-1, keepdim=True)
    support = support.to(x.dtype)  # (d,), or (B, 1, d) per row (a batch of rows of different sub-models)
    return (x.pow(2) * support).sum(-1, keepdim=True) / support.sum(-1, keepdim=True)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, support: torch.Tensor | None = None) -> torch.Tensor:
    """weight * x / sqrt(mean(x^2) + eps) over the last dim. x: (..., d); weight, support: (d,)."""
    if support is None and cpu_kernels.norm_applies(x, weight):  # a decoding step on a CPU: one call
        return cpu_kernels.rms_norm(x, weight, eps)
    dtype = x.dtype
    x = x.to(compute_dtype(dtype))
    x = x * torch.rsqrt(_mean_square(x, support) + eps)
    return (weight.to(x.dtype) * x).to(dtype)


def gated_group_rms_norm(
    x: torch.Tensor,
    z: torch.Tensor,
    weight: torch.Tensor,
    num_groups: int,
    eps: float,
    support: torch.Tensor | None = None,
) -> torch.Tensor:
    """weight * groupnorm(x * silu(z)): RMS over each of `num_groups` contiguous channel groups.

    x, z: (..., C); weight: (C,); support: optional (C,) channel weights (masked heads / head channels), or
    (B, 1, C) per row: each group's mean square runs over its supported channels only.
    """
    if support is None and z.dtype == x.dtype and cpu_kernels.norm_applies(x, weight):
        return cpu_kernels.rms_norm(x, weight, eps, z=z, groups=num_groups)
    dtype = x.dtype
    cdt = compute_dtype(dtype)
    x = x.to(cdt) * F.silu(z.to(cdt))
    *lead, dim = x.shape
    xg = x.view(*lead, num_groups, dim // num_groups)  # (..., G, C/G)
    sg = None if support is None else support.reshape(*support.shape[:-1], num_groups, dim // num_groups)
    if sg is None:
        ms = xg.pow(2).mean(-1, keepdim=True)
    else:
        sg = sg.to(cdt)
        ms = (xg.pow(2) * sg).sum(-1, keepdim=True) / sg.sum(-1, keepdim=True)
    xg = xg * torch.rsqrt(ms + eps)
    # transformers casts to the input dtype before the weight multiply here (unlike the block norm)
    return weight * xg.reshape(*lead, dim).to(dtype)


class RMSNorm(nn.Module):
    """y = weight * x / sqrt(mean(x^2) + eps) over the last dim.

    Args:
        dim: normalised width D.
        eps: variance epsilon.
    Shapes: x (..., D) -> (..., D).
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor, support: torch.Tensor | None = None) -> torch.Tensor:
        """x: (..., d) with d <= D (a sliced sub-model uses the first d weights); support: optional (d,)
        weights of the active channels (masked sub-model): the mean square runs over them only."""
        return rms_norm(x, self.weight[: x.shape[-1]], self.eps, support)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class GatedGroupRMSNorm(nn.Module):
    """Mamba2's output norm: y = weight * groupnorm(x * silu(z)), RMS taken per group of channels.

    The channels of `x` are laid out head-major (H heads x P head dims) and heads map to groups contiguously,
    so group g covers the contiguous slice [g*H*P/G, (g+1)*H*P/G).

    Args:
        dim: H*P, the Mamba inner width.
        num_groups: G.
        eps: variance epsilon.
    Shapes: x, z (..., H*P) -> (..., H*P).
    """

    def __init__(self, dim: int, num_groups: int, eps: float = 1e-5) -> None:
        super().__init__()
        assert dim % num_groups == 0, (dim, num_groups)
        self.num_groups = num_groups
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return gated_group_rms_norm(x, z, self.weight, self.num_groups, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, groups={self.num_groups}, eps={self.eps}"
