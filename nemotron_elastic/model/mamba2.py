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

import itertools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu_kernels
from .batch_cache import MambaRows
from .decode import MambaState
from .kernels import TORCH, Kernels
from .layout import Kept, Linear, MambaIndex, Select, keeps_runs, kept, mamba_indices, scale, sub_linear, take
from .masks import Axis
from .norm import GatedGroupRMSNorm, compute_dtype, gated_group_rms_norm
from .ssd import ssd_step


class MambaLayout(NamedTuple):
    """One mixer's sizes under a sub-model: kept heads, head channels, inner and conv widths, and `sel`,
    the kept indices of every tensor (prefix lengths when nothing is cut)."""

    heads: int
    head_dim: int
    inner: int
    conv_dim: int
    sel: MambaIndex


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
        self.kernels: Kernels = TORCH  # the SSD scan and causal conv (model/kernels.py; set by HybridLM.set_kernels)
        self._kept: dict[tuple, MambaIndex] = {}  # (heads per group, head channels, device) -> kept indices
        inner = num_heads * head_dim
        self.conv_dim = inner + 2 * num_groups * state_size
        self.in_proj = Linear(hidden_size, inner + self.conv_dim + num_heads, bias=proj_bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, conv_kernel, groups=self.conv_dim, bias=conv_bias)
        self.dt_bias = nn.Parameter(torch.empty(num_heads))
        self.A_log = nn.Parameter(torch.empty(num_heads))
        self.D = nn.Parameter(torch.empty(num_heads))
        self.norm = GatedGroupRMSNorm(inner, num_groups, eps=norm_eps)
        self.out_proj = Linear(inner, hidden_size, bias=proj_bias)

    def _layout(self, width: Axis | None, head_dim: Axis | None, device) -> MambaLayout:
        """Sizes and kept indices for a sub-model (heads per group `width.size`, head channels
        `head_dim.size`); plain prefix lengths when nothing is cut, so the parent path does no indexing."""
        g, per_group = self.num_groups, self.num_heads // self.num_groups
        kg = per_group if width is None else width.size
        c = self.head_dim if head_dim is None else head_dim.size
        h = kg * g
        conv_dim = h * c + 2 * g * self.state_size
        if kg == per_group and c == self.head_dim:  # full width: prefixes of the whole tensors
            sel = MambaIndex(heads=h, inner=h * c, conv=conv_dim, in_proj=self.in_proj.out_features)
        elif not keeps_runs():  # training, or inside a compiled graph: plain indices
            sel = mamba_indices(self.num_heads, self.head_dim, g, self.state_size, kg, c, device)
        else:  # inference: the indices and their runs once per sub-model, then reused by every step
            key = (kg, c, torch.device(device))
            if key not in self._kept:
                self._kept[key] = MambaIndex(*map(kept, mamba_indices(self.num_heads, self.head_dim, g,
                                                                      self.state_size, kg, c, device)))
            sel = self._kept[key]
        return MambaLayout(heads=h, head_dim=c, inner=h * c, conv_dim=conv_dim, sel=sel)

    def empty_state(
        self,
        batch: int,
        dtype: torch.dtype,
        device: torch.device,
        width: Axis | None = None,
        head_dim: Axis | None = None,
    ) -> MambaState:
        """Zero conv and SSM states, i.e. the start of a sequence (sized for the sub-model, if any)."""
        lay = self._layout(width, head_dim, device)
        conv = torch.zeros(batch, lay.conv_dim, self.conv_kernel - 1, dtype=dtype, device=device)
        ssm = torch.zeros(batch, lay.heads, lay.head_dim, self.state_size, dtype=compute_dtype(dtype), device=device)
        return MambaState(conv, ssm)

    def forward(
        self,
        x: torch.Tensor,
        state: MambaState | MambaRows | None = None,
        width: Axis | None = None,
        head_dim: Axis | None = None,
    ) -> tuple[torch.Tensor, MambaState | MambaRows | None]:
        """x: (B, T, d) -> y (B, T, d), and the updated state when `state` is given (else None).

        d <= D when the hidden axis is sliced; width: heads kept *per group* (the same prefix in every group);
        head_dim: head channels kept (one prefix shared by all heads). Their `factor()` multiplies the kept
        channels of the gated-norm output, and their weights restrict the norm's mean square (masked heads /
        channels do not count), so a masked mixer equals the sliced one.

        A `MambaRows` state is a batch of rows fed `step.counts` valid tokens each (right-padded): padded
        positions get dt = 0, so they leave the SSM state as it was, and each row's conv state keeps its own
        last K-1 valid inputs (model/batch_cache.py).
        """
        bsz, t, d = x.shape
        rows = state if isinstance(state, MambaRows) else None
        g = self.num_groups
        lay = self._layout(width, head_dim, x.device)
        h, p, inner, _, sel = lay
        proj = sub_linear(x, self.in_proj, sel.in_proj, d)  # (B, T, 2I + 2GN + H)
        one_token_rows = rows is not None and not rows.step.packed and t == 1
        fused = self._fused_step(proj[:, 0], rows, lay, width, head_dim) if one_token_rows else None
        if fused is not None:  # a batch's decoding step, in one kernel call between the projections
            return sub_linear(fused[0][:, None], self.out_proj, d, sel.inner), fused[1]
        if rows is not None and rows.step.packed:  # x: (N, 1, d), the real tokens of a ragged step
            y, new_state = self._mix_packed(proj[:, 0], rows, lay, width, head_dim)
        else:
            if rows is not None:
                state = rows.state or self.empty_state(bsz, x.dtype, x.device, width, head_dim)
            y, new_state = self._mix(proj, state, lay, rows)
            if rows is not None:
                new_state = MambaRows(new_state, rows.step)
        support = _channel_product(width, head_dim, g, h, p, lambda a: a.weights)
        z = proj[..., :inner]
        y = gated_group_rms_norm(
            y.reshape(bsz, t, inner).to(x.dtype), z, take(self.norm.weight, sel.inner), g, self.norm.eps, support
        )  # (B, T, I)
        y = scale(y, _channel_product(width, head_dim, g, h, p, lambda a: a.factor()))
        return sub_linear(y, self.out_proj, d, sel.inner), new_state

    def _fused_step(
        self, proj: torch.Tensor, rows: MambaRows, lay: MambaLayout, width: Axis | None, head_dim: Axis | None
    ) -> tuple[torch.Tensor, MambaRows] | None:
        """`forward`'s work between the projections for a batch's rows of one token each (proj (B, 2I + 2GN
        + H)) in one kernel call (model/cpu_kernels.py `mamba_step`): -> (y (B, I), the rows' state, updated
        in place). None where it does not apply: not float32 on a CPU without grad, or a sub-model with
        channel weights or factors (soft or per-row masks), which the torch path takes."""
        if proj.dtype != torch.float32 or self.conv1d.weight.dtype != torch.float32:
            return None
        if any(a is not None and (a.weights is not None or a.scale is not None) for a in (width, head_dim)):
            return None
        state = rows.state or self.empty_state(proj.shape[0], proj.dtype, proj.device, width, head_dim)
        if not (cpu_kernels.ssm_step_applies(state.ssm) and cpu_kernels.ssm_step_applies(state.conv)):
            return None
        sel = lay.sel
        a = -torch.exp(take(self.A_log, sel.heads).float())
        y = cpu_kernels.mamba_step(
            proj, state.conv, self.conv1d.weight, _conv_channels(sel.conv), self.conv1d.bias, rows.step.counts,
            take(self.dt_bias, sel.heads), self.dt_min, a, take(self.D, sel.heads), state.ssm,
            take(self.norm.weight, sel.inner), self.norm.eps,
        )  # fmt: skip
        return y, MambaRows(state, rows.step)

    def _mix(
        self, proj: torch.Tensor, state: MambaState | None, lay: MambaLayout, rows: MambaRows | None = None,
        own: bool = False,
    ) -> tuple[torch.Tensor, MambaState | None]:
        """The conv and the SSM over projected tokens proj (B, T, 2I + 2GN + H) -> y (B, T, H, P) before the
        gated norm, and the new state (None without `state`); `rows`: a right-padded batch (forward). A
        recurrent step updates the SSM state in place when it belongs to this call (`own`, or a batch's)."""
        bsz, t, _ = proj.shape
        g, n = self.num_groups, self.state_size
        h, p, inner, conv_dim, sel = lay
        _, xbc, dt = proj.split([inner, conv_dim, h], dim=-1)

        xbc, new_conv = self._conv(xbc, state, sel.conv, rows, own)
        xs, b_mat, c_mat = xbc.split([inner, g * n, g * n], dim=-1)

        cdt = compute_dtype(proj.dtype)
        dt = F.softplus(dt.to(cdt) + take(self.dt_bias, sel.heads).to(cdt)).clamp(min=self.dt_min)  # (B, T, H)
        if rows is not None:  # dt = 0 at padded positions: exp(0 * A) = 1 and no input, the state is kept
            dt = dt * rows.step.valid[:, :, None].to(cdt)
        a = -torch.exp(take(self.A_log, sel.heads).to(cdt))  # (H,)
        skip = take(self.D, sel.heads)
        xs = xs.reshape(bsz, t, h, p)
        b_mat, c_mat = b_mat.reshape(bsz, t, g, n), c_mat.reshape(bsz, t, g, n)

        if state is None:
            return self.kernels.ssd(xs, dt, a, b_mat, c_mat, self.chunk_size, D=skip), None
        if t == 1:  # recurrent step: O(1) per token
            # a batch's state belongs to its cache alone (model/batch_cache.py): update it in place
            y, ssm = ssd_step(state.ssm, xs[:, 0], dt[:, 0], a, b_mat[:, 0], c_mat[:, 0], D=skip,
                              inplace=own or rows is not None)
            return y[:, None], MambaState(new_conv, ssm)
        # a chunk of tokens continuing from the cached state (prefill)
        y, ssm = self.kernels.ssd(
            xs, dt, a, b_mat, c_mat, self.chunk_size, D=skip, initial_state=state.ssm, return_final_state=True
        )
        return y, MambaState(new_conv, ssm)

    def _conv(
        self, xbc: torch.Tensor, state: MambaState | None, sel: Select, rows: MambaRows | None, own: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The depthwise causal conv over [x|B|C] with SiLU: xbc (B, T, C) -> (B, T, C), and the new conv state
        (None without `state`); the cached K-1 inputs play the role of the left zero padding."""
        bsz, t, conv_dim = xbc.shape
        if state is not None and t == 1 and (own or rows is not None) and cpu_kernels.ssm_step_applies(state.conv):
            # one token per row into a state this call owns (as the SSM step): one pass, updated in place
            out = cpu_kernels.conv_step(state.conv, xbc[:, 0], self.conv1d.weight, _conv_channels(sel),
                                        self.conv1d.bias, None if rows is None else rows.step.counts)
            return out[:, None], state.conv
        weight, bias = take(self.conv1d.weight, sel), self.conv1d.bias
        bias = None if bias is None else take(bias, sel)
        if state is None:
            return self.kernels.conv(xbc, weight[:, 0], bias), None
        full = torch.cat([state.conv, xbc.transpose(1, 2)], dim=-1)  # (B, C, K-1+T)
        if rows is None:
            new_conv = full[..., full.shape[-1] - (self.conv_kernel - 1) :]
        else:  # row b's last K-1 inputs end at its last valid token: full[b, :, n_b : n_b + K-1]
            keep = rows.step.counts[:, None] + torch.arange(self.conv_kernel - 1, device=xbc.device)  # (B, K-1)
            new_conv = full.gather(2, keep[:, None, :].expand(bsz, conv_dim, -1))
        if t == 1:  # one output per channel: a dot product over the K inputs, cheaper than a conv call here
            out = (full * weight[:, 0]).sum(-1, keepdim=True)  # (B, C, 1)
            return F.silu(out if bias is None else out + bias[:, None]).transpose(1, 2), new_conv  # (B, 1, C)
        return F.silu(F.conv1d(full, weight, bias, groups=conv_dim)).transpose(1, 2), new_conv  # (B, T, C)

    def _mix_packed(
        self, proj: torch.Tensor, rows: MambaRows, lay: MambaLayout, width: Axis | None, head_dim: Axis | None
    ) -> tuple[torch.Tensor, MambaRows]:
        """`_mix` of a packed ragged step: proj (N, 2I + 2GN + H), the real tokens in row order -> y (N, 1, H, P)
        and the rows' state, updated in place. The one-token rows take one recurrent step together; rows fed
        several tokens (prompt chunks) run the chunked scan from their states, one call per token count (a
        burst of new requests whose prompts have one length scans together). No padded slot is computed: the
        scan of a padded batch costs every row the longest row's chunk."""
        step = rows.step
        state = rows.state or self.empty_state(step.counts.shape[0], proj.dtype, proj.device, width, head_dim)
        counts = step.counts.tolist()
        starts = [0, *itertools.accumulate(counts)][:-1]
        y = proj.new_empty(proj.shape[0], lay.heads, lay.head_dim)  # (N, H, P)
        by_count: dict[int, list[int]] = {}  # rows fed the same number of tokens run together
        for b, c in enumerate(counts):
            if c > 0:
                by_count.setdefault(c, []).append(b)
        parts = [(batch, [t for b in batch for t in range(starts[b], starts[b] + c)]) for c, batch in by_count.items()]
        for batch, tokens in parts:  # rows, and their tokens in the pack
            if _is_range(batch) and _is_range(tokens):
                # the usual case (running rows first, a new prompt after them): views, so a one-token step
                # updates the cache's states in place, with no gathered copy and no copy back
                b0, t0 = batch[0], tokens[0]
                piece = proj[t0 : t0 + len(tokens)].view(len(batch), -1, proj.shape[-1])
                sub = MambaState(state.conv[b0 : b0 + len(batch)], state.ssm[b0 : b0 + len(batch)])
                out, new = self._mix(piece, sub, lay, own=True)
                y[t0 : t0 + len(tokens)] = out.reshape(len(tokens), lay.heads, lay.head_dim)
                for kept_state, fresh in ((sub.conv, new.conv), (sub.ssm, new.ssm)):
                    if fresh.data_ptr() != kept_state.data_ptr():  # a prompt chunk's new state: copied in
                        kept_state.copy_(fresh)
                continue
            index, at = torch.tensor(batch, device=proj.device), torch.tensor(tokens, device=proj.device)
            piece = proj.index_select(0, at).view(len(batch), -1, proj.shape[-1])  # (b, t, .)
            sub = MambaState(state.conv.index_select(0, index), state.ssm.index_select(0, index))
            out, new = self._mix(piece, sub, lay, own=True)  # `sub` is a gathered copy
            y.index_copy_(0, at, out.reshape(len(tokens), lay.heads, lay.head_dim).to(y.dtype))
            state.conv.index_copy_(0, index, new.conv)
            state.ssm.index_copy_(0, index, new.ssm.to(state.ssm.dtype))
        return y[:, None], MambaRows(state, step)


def _conv_channels(sel: Select) -> torch.Tensor | None:
    """The conv kernels' kept channels: None for a prefix (the parent), else the index tensor."""
    return None if isinstance(sel, int) else sel.index if isinstance(sel, Kept) else sel


def _is_range(values: list[int]) -> bool:
    """Whether `values` are consecutive integers (a slice can stand for them)."""
    return values[-1] - values[0] + 1 == len(values)


def _channel_product(width, head_dim, groups: int, heads: int, p: int, get) -> torch.Tensor | None:
    """Per inner channel (H*P,) product of a per-head value (given per position in a group, (H/G,) or ())
    and a per-head-channel value ((P,) or ()), as picked by `get` from the two axes; None when both are None.
    Per-row values ((B, 1, H/G), (B, 1, P): rows of different sub-models) give (B, 1, H*P)."""
    per_head = None if width is None else get(width)
    per_dim = None if head_dim is None else get(head_dim)
    if per_head is None and per_dim is None:
        return None
    ref = per_head if per_head is not None else per_dim
    if ref.dim() <= 1 and (per_dim is None or per_dim.dim() <= 1):
        one = torch.ones((), dtype=ref.dtype, device=ref.device)
        per_head = (one if per_head is None else per_head).expand(heads // groups).repeat(groups)  # (H,)
        per_dim = (one if per_dim is None else per_dim).expand(p)  # (P,)
        return (per_head[:, None] * per_dim[None, :]).reshape(-1)
    rows = max(t.shape[0] for t in (per_head, per_dim) if t is not None and t.dim() > 1)
    one = torch.ones(rows, 1, 1, dtype=ref.dtype, device=ref.device)
    per_head = (one if per_head is None else per_head).expand(rows, 1, heads // groups)
    per_dim = (one if per_dim is None else per_dim).expand(rows, 1, p)
    per_head = per_head.reshape(rows, heads // groups).repeat(1, groups)  # (B, H)
    return (per_head[:, :, None] * per_dim.reshape(rows, 1, p)).reshape(rows, 1, heads * p)
