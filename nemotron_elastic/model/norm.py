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


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision reductions run in: float32 for half types, else the input's own dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(compute_dtype(dtype))
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight.to(x.dtype) * x).to(dtype)

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
        dtype = x.dtype
        cdt = compute_dtype(dtype)
        x = x.to(cdt) * F.silu(z.to(cdt))
        *lead, dim = x.shape
        xg = x.view(*lead, self.num_groups, dim // self.num_groups)  # (..., G, H*P/G)
        xg = xg * torch.rsqrt(xg.pow(2).mean(-1, keepdim=True) + self.eps)
        # transformers casts to the input dtype before the weight multiply here (unlike the block norm)
        return self.weight * xg.reshape(*lead, dim).to(dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, groups={self.num_groups}, eps={self.eps}"
