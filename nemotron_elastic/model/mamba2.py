# SPDX-License-Identifier: Apache-2.0
"""The Mamba2 mixer ('M' blocks).

Shape legend: B batch, T tokens, D hidden, H heads, P head dim, G groups (B/C groups), N state size,
K conv kernel, I = H*P inner width, C = I + 2*G*N conv channels.

Packed input projection, in the order of mamba_ssm and transformers (kept so weights compare bit for bit):

    in_proj(x) = [ z (I) | x (I) | B (G*N) | C (G*N) | dt (H) ]

The depthwise causal conv runs over [x | B | C]; heads map to groups contiguously (head h reads B/C of group
h // (H/G)); the output goes through the grouped gated RMSNorm `norm(y * silu(z))` and `out_proj`.
softplus(dt + dt_bias) is clamped from below at `time_step_min`, as transformers' NemotronH does.

Official implementation: mamba_ssm `modules/mamba2_simple.py`; transformers `NemotronHMamba2Mixer.torch_forward`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cache import MambaState
from .norm import GatedGroupRMSNorm, compute_dtype
from .ssd import ssd_scan, ssd_step


class Mamba2Mixer(nn.Module):
    """Args:
        hidden_size: D.
        num_heads: H, the elastic head count (a multiple of num_groups).
        head_dim: P.
        num_groups: G.
        state_size: N.
        conv_kernel: K.
        chunk_size: SSD chunk length (speed only).
        conv_bias / proj_bias: biases of conv1d and of in_proj/out_proj.
        norm_eps: eps of the gated norm.
        dt_min: lower clamp of softplus(dt + dt_bias).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        head_dim: int,
        num_groups: int,
        state_size: int,
        conv_kernel: int,
        chunk_size: int,
        conv_bias: bool,
        proj_bias: bool,
        norm_eps: float,
        dt_min: float,
    ) -> None:
        super().__init__()
        assert num_heads % num_groups == 0, (num_heads, num_groups)
        self.num_heads, self.head_dim, self.num_groups, self.state_size = num_heads, head_dim, num_groups, state_size
        self.conv_kernel, self.chunk_size, self.dt_min = conv_kernel, chunk_size, dt_min
        inner = num_heads * head_dim
        self.conv_dim = inner + 2 * num_groups * state_size
        self.in_proj = nn.Linear(hidden_size, inner + self.conv_dim + num_heads, bias=proj_bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, conv_kernel, groups=self.conv_dim, bias=conv_bias)
        self.dt_bias = nn.Parameter(torch.empty(num_heads))
        self.A_log = nn.Parameter(torch.empty(num_heads))
        self.D = nn.Parameter(torch.empty(num_heads))
        self.norm = GatedGroupRMSNorm(inner, num_groups, eps=norm_eps)
        self.out_proj = nn.Linear(inner, hidden_size, bias=proj_bias)

    def empty_state(self, batch: int, dtype: torch.dtype, device: torch.device) -> MambaState:
        """Zero conv and SSM states, i.e. the start of a sequence."""
        conv = torch.zeros(batch, self.conv_dim, self.conv_kernel - 1, dtype=dtype, device=device)
        ssm = torch.zeros(batch, self.num_heads, self.head_dim, self.state_size, dtype=compute_dtype(dtype), device=device)
        return MambaState(conv, ssm)

    def forward(self, x: torch.Tensor, state: MambaState | None = None) -> tuple[torch.Tensor, MambaState | None]:
        """x: (B, T, D) -> y (B, T, D), and the updated state when `state` is given (else None)."""
        bsz, t, _ = x.shape
        h, p, g, n = self.num_heads, self.head_dim, self.num_groups, self.state_size
        inner = h * p
        z, xbc, dt = self.in_proj(x).split([inner, self.conv_dim, h], dim=-1)  # (B,T,I) (B,T,C) (B,T,H)

        # depthwise causal conv over [x|B|C]; the cached K-1 inputs play the role of the left zero padding
        xbc = xbc.transpose(1, 2)  # (B, C, T)
        weight = self.conv1d.weight
        if state is None:
            xbc = F.conv1d(xbc, weight, self.conv1d.bias, padding=self.conv_kernel - 1, groups=self.conv_dim)[..., :t]
            new_conv = None
        else:
            full = torch.cat([state.conv, xbc], dim=-1)  # (B, C, K-1+T)
            new_conv = full[..., full.shape[-1] - (self.conv_kernel - 1) :]
            xbc = F.conv1d(full, weight, self.conv1d.bias, groups=self.conv_dim)  # (B, C, T)
        xbc = F.silu(xbc).transpose(1, 2)  # (B, T, C)
        xs, b_mat, c_mat = xbc.split([inner, g * n, g * n], dim=-1)

        cdt = compute_dtype(x.dtype)
        dt = F.softplus(dt.to(cdt) + self.dt_bias.to(cdt)).clamp(min=self.dt_min)  # (B, T, H)
        a = -torch.exp(self.A_log.to(cdt))  # (H,)
        xs = xs.reshape(bsz, t, h, p)
        b_mat, c_mat = b_mat.reshape(bsz, t, g, n), c_mat.reshape(bsz, t, g, n)

        if state is None:
            y = ssd_scan(xs, dt, a, b_mat, c_mat, self.chunk_size, D=self.D)
            new_state = None
        elif t == 1:  # recurrent step: O(1) per token
            y, ssm = ssd_step(state.ssm, xs[:, 0], dt[:, 0], a, b_mat[:, 0], c_mat[:, 0], D=self.D)
            y, new_state = y[:, None], MambaState(new_conv, ssm)
        else:  # a chunk of tokens continuing from the cached state (prefill)
            y, ssm = ssd_scan(
                xs, dt, a, b_mat, c_mat, self.chunk_size, D=self.D, initial_state=state.ssm, return_final_state=True
            )
            new_state = MambaState(new_conv, ssm)
        y = self.norm(y.reshape(bsz, t, inner).to(x.dtype), z)  # (B, T, I)
        return self.out_proj(y), new_state
