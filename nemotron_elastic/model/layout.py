# SPDX-License-Identifier: Apache-2.0
"""The layout rules: which rows / columns / channels of the parent's tensors a sub-model keeps, and how a
layer runs on that part of its weights.

One place for the layout rules, shared by the elastic forward (`model/`), the standalone slicer
(`subnet/slicing.py`) and the masks (`model/masks.py`), so the three cannot drift apart:

- grouped prefixes: a sub-model keeps the first `k` units *of every group* (Mamba heads per B/C group,
  query heads per KV group). Units of group g occupy [g*U, (g+1)*U) for U units per group.
- Mamba inner channels are head-major (H x P); keeping heads `h` and the first `c` head channels keeps
  channels h*P + [0, c).
- Mamba `in_proj` rows are the packed segments [z (H*P) | x (H*P) | B (G*N) | C (G*N) | dt (H)]; B and C
  are never cut. The conv runs over [x | B | C].
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu_kernels, tiles

Run = tuple[int, int, int, int]  # (start, length, count, step): `count` runs of `length` units, `step` apart


class Kept(NamedTuple):
    """Explicit kept indices with their runs, worked out once (`kept`) and cached by the module that owns
    the layout, so decoding steps read weight views without a device sync or an index computation.

    index: (n,) long, for gathers; runs: the same indices as arithmetic progressions of equal contiguous
    runs (a prefix per group is one progression), in index order.
    """

    index: torch.Tensor
    runs: tuple[Run, ...]


Select = int | torch.Tensor | Kept  # a prefix length, or explicit kept indices (bare or with their runs)


class MambaIndex(NamedTuple):
    """What one Mamba2 mixer keeps: a prefix length (nothing cut) or explicit indices, per tensor axis.

    heads: (h,) kept heads (dt_bias, A_log, D and the dt rows);
    inner: (h*c,) kept inner channels (z / x rows, gated-norm weight, out_proj columns);
    conv: (h*c + 2*G*N,) kept conv channels over [x | B | C];
    in_proj: (2*h*c + 2*G*N + h,) kept in_proj rows in the packed order [z | x | B | C | dt].
    """

    heads: Select
    inner: Select
    conv: Select
    in_proj: Select


def group_prefix(num_units: int, num_groups: int, keep_per_group: int, device=None) -> torch.Tensor:
    """Indices of the first `keep_per_group` units of every group -> (num_groups * keep_per_group,) long.

    Example: 8 units, 2 groups, keep 3 -> [0, 1, 2, 4, 5, 6].
    """
    per_group = num_units // num_groups
    assert num_units % num_groups == 0 and 0 < keep_per_group <= per_group, (num_units, num_groups, keep_per_group)
    base = torch.arange(num_groups, device=device)[:, None] * per_group  # (G, 1)
    return (base + torch.arange(keep_per_group, device=device)[None, :]).reshape(-1)


def head_channels(heads: torch.Tensor, head_dim: int, keep_dim: int) -> torch.Tensor:
    """Channels h*head_dim + [0, keep_dim) of the given heads, head-major -> (len(heads) * keep_dim,)."""
    return (heads[:, None] * head_dim + torch.arange(keep_dim, device=heads.device)[None, :]).reshape(-1)


def mamba_indices(
    num_heads: int,
    head_dim: int,
    num_groups: int,
    state_size: int,
    heads_per_group: int,
    keep_dim: int,
    device=None,
) -> MambaIndex:
    """Kept indices of one Mamba2 mixer for `heads_per_group` heads per group and `keep_dim` head channels:
    a `MambaIndex` of index tensors."""
    inner_full = num_heads * head_dim
    bc = 2 * num_groups * state_size
    heads = group_prefix(num_heads, num_groups, heads_per_group, device)
    inner = head_channels(heads, head_dim, keep_dim)
    bc_rows = torch.arange(bc, device=device)
    return MambaIndex(
        heads=heads,
        inner=inner,
        conv=torch.cat([inner, inner_full + bc_rows]),
        in_proj=torch.cat([inner, inner_full + inner, 2 * inner_full + bc_rows, 2 * inner_full + bc + heads]),
    )


def attention_indices(num_heads: int, num_kv_heads: int, head_dim: int, heads_per_group: int, device=None):
    """Kept query heads (first `heads_per_group` of every KV group) and their q rows / o_proj columns.

    Returns: heads (h,), channels (h*head_dim,).
    """
    heads = group_prefix(num_heads, num_kv_heads, heads_per_group, device)
    return heads, head_channels(heads, head_dim, head_dim)


# Small functional helpers for running a layer on part of its weights (sliced sub-models).
def _take(t: torch.Tensor, dim: int, sel: Select) -> torch.Tensor:
    if isinstance(sel, int):
        return t if sel == t.shape[dim] else t.narrow(dim, 0, sel)
    return t.index_select(dim, sel.index if isinstance(sel, Kept) else sel)


# With this few tokens (decoding, or a decoding step that carries a new prompt's chunk), gathering the kept
# weight rows / columns costs more than computing with views of them: kept units are a few contiguous runs (a
# prefix per group), so the layer runs as one small matmul per run on weight views, with no weight copy and
# no compute beyond the kept part.
SMALL_BATCH_TOKENS = 64


# Decoding feeds a few rows through every linear layer. This CPU's GEMMs run x @ W^T (F.linear) for a few
# rows far below their larger-batch efficiency, while W @ x^T (the weight as the left operand, the same
# products) takes about 0.6x the time: in float32 (MKL) from 4 rows, for weights of 2M+ elements (1 to 3
# rows take F.linear's matrix-vector path, about as fast as one row); in bfloat16 (oneDNN) from 2 rows and
# 1M elements, sliced views included. One bfloat16 row runs as a matrix-vector product (torch.mv) on a
# contiguous weight, 0.6x F.linear's time (on a strided view mv copies it: F.linear there). 2 cores, 12
# weights of 3264 x 1088 that the caches cannot hold: benchmarks/decode_budgets.py `few_rows`.
FEW_ROWS = {torch.float32: (4, 64), torch.bfloat16: (2, 64)}  # rows; other dtypes: F.linear
MIN_WEIGHT = {torch.float32: 1 << 21, torch.bfloat16: 1 << 20}  # elements
VECTOR_DTYPES = (torch.bfloat16,)  # one row: torch.mv on a contiguous weight of MIN_WEIGHT+ elements
# float32 rows from here up to cpu_kernels.MAX_ROWS go to the few-rows kernel when it is built: 0.57x to 0.94x
# the time of torch's best form at 4 to 16 rows, while 1 to 3 rows of a whole weight stay with MKL's
# matrix-vector path, 1.03x-1.14x faster there (benchmarks/decode_budgets.py `few_rows`). A sliced layer's
# runs take the kernel at any row count: one call instead of one per run (`_linear_by_runs`).
KERNEL_MIN_ROWS = 4


def _few_rows_form(x: torch.Tensor, rows: int, weight: torch.Tensor) -> str:
    """How `rows` rows of x times `weight` run fastest here: "mv", "left" (W @ x^T) or "linear" (F.linear)."""
    if x.dtype not in FEW_ROWS or x.device.type != "cpu" or torch.is_grad_enabled():
        return "linear"
    if weight.numel() < MIN_WEIGHT[x.dtype]:
        return "linear"
    if rows == 1 and x.dtype in VECTOR_DTYPES and weight.is_contiguous():
        return "mv"
    low, high = FEW_ROWS[x.dtype]
    return "left" if low <= rows <= high else "linear"


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias): x (..., K), weight (N, K) -> (..., N), contiguous.

    Without grad, on a CPU, for a float32 / bfloat16 x and a weight of MIN_WEIGHT+ elements, FEW_ROWS rows
    are computed as (W @ x^T)^T and one bfloat16 row as W @ x (torch.mv): the same values up to float
    rounding (another summation order), as any change of batch shape gives.
    """
    rows = x.numel() // max(1, x.shape[-1])
    if rows >= KERNEL_MIN_ROWS and cpu_kernels.applies(x, weight, rows):
        out = cpu_kernels.few_rows(x.reshape(rows, x.shape[-1]), weight, bias)
        return out.view(*x.shape[:-1], weight.shape[0])
    form = _few_rows_form(x, rows, weight)
    if form == "linear":
        return F.linear(x, weight, bias)
    if form == "mv":
        out = torch.mv(weight, x.reshape(-1)) if bias is None else torch.addmv(bias, weight, x.reshape(-1))
        return out.view(*x.shape[:-1], weight.shape[0])
    flat = x.reshape(rows, x.shape[-1]).t()  # (K, rows)
    out = torch.mm(weight, flat) if bias is None else torch.addmm(bias[:, None], weight, flat)  # (N, rows)
    return out.t().contiguous().view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """nn.Linear computed by `linear` (the few-rows CPU path); same parameters, state dict and hooks. For
    serving, its weight may be stored in tiles instead (`tiles`, model/tiles.py); the state dict still holds
    the row-major `weight`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_parameter("tiles", None)
        self._register_state_dict_hook(tiles.weight_in_state_dict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tiles is not None:
            rows, cols = _runs(self.out_features), _segments(_runs(self.in_features))
            return tiles.linear(x, self.tiles, self.bias, rows, cols)
        return linear(x, self.weight, self.bias)


def keeps_runs() -> bool:
    """Whether a layout should carry its runs (`Kept`, worked out once and cached by its module): in
    inference outside a compiled graph. Training gathers with plain indices, and a compiled graph must not
    sync with the host."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling()


def kept(index: torch.Tensor) -> Kept:
    """`index` with its runs (one host sync: done once per layout, not per step)."""
    if index.numel() == 0:
        return Kept(index, ())
    breaks = ((index[1:] - index[:-1]) != 1).nonzero().flatten()  # positions where a contiguous run ends
    starts = torch.cat([breaks.new_zeros(1), breaks + 1])
    ends = torch.cat([breaks + 1, breaks.new_full((1,), index.numel())])
    progressions: list[list[int]] = []  # [start, length, count, step]
    for start, length in zip(index[starts].tolist(), (ends - starts).tolist()):
        last = progressions[-1] if progressions else None
        if last is not None and last[1] == length and start > last[0]:
            step = start - last[0] if last[2] == 1 else last[3]
            if start == last[0] + last[2] * step:  # the next run of the same progression
                last[2], last[3] = last[2] + 1, step
                continue
        progressions.append([start, length, 1, 0])
    return Kept(index, tuple(map(tuple, progressions)))


def _runs(sel: Select) -> tuple[Run, ...]:
    if isinstance(sel, int):
        return ((0, sel, 1, 0),)
    return (sel if isinstance(sel, Kept) else kept(sel)).runs


def _index(sel: torch.Tensor | Kept) -> torch.Tensor:
    return sel.index if isinstance(sel, Kept) else sel


@lru_cache(maxsize=4096)
def _segments(runs: tuple[Run, ...]) -> tuple[tuple[int, int, int], ...]:
    """Column runs -> the kernel's segments: (weight column, x column, length) per contiguous run."""
    out, offset = [], 0
    for start, length, count, step in runs:
        for i in range(count):
            out.append((start + i * step, offset, length))
            offset += length
    return tuple(out)


def _each_run(x: torch.Tensor, weight: torch.Tensor, rows: Run, cols: Run) -> torch.Tensor:
    """`_run_matmul` on a CPU: one 2-D matmul per (row run, column run) pair on a view of the weight.

    There a batched matmul copies strided weight blocks in bfloat16 (oneDNN packs them first: 4-5x slower
    than the runs one by one) and gains nothing in float32 (2 cores; benchmarks/decode_budgets.py
    `runs_matmul`). An accelerator keeps the batched form: one launch per progression.
    """
    (r0, rn, rc, rs), (c0, cn, cc, cs) = rows, cols
    outs = []
    for i in range(rc):
        top, acc = r0 + i * rs, None
        for j in range(cc):
            left = c0 + j * cs
            part = linear(x[:, j * cn : (j + 1) * cn], weight[top : top + rn, left : left + cn])  # (T, rn)
            acc = part if acc is None else acc.add_(part)
        outs.append(acc)
    return outs[0] if rc == 1 else torch.cat(outs, dim=-1)


def _run_matmul(x: torch.Tensor, weight: torch.Tensor, rows: Run, cols: Run, batched: bool) -> torch.Tensor:
    """x (T, count_c * length_c) times the weight block picked by a row and a column progression ->
    (T, count_r * length_r), on strided views of the weight, without a copy of it: one batched matmul per
    progression (`batched`) or one 2-D matmul per run (`_each_run`)."""
    (r0, rn, rc, rs), (c0, cn, cc, cs) = rows, cols
    if (rc == 1 and cc == 1) or not batched:
        return _each_run(x, weight, rows, cols)
    s0, s1 = weight.stride()
    base = weight.storage_offset() + r0 * s0 + c0 * s1
    t = x.shape[0]
    if cc == 1:  # several row runs: a batch of (rn, cn) blocks, each giving rn outputs
        blocks = weight.as_strided((rc, rn, cn), (rs * s0, s0, s1), base)
        return torch.matmul(x, blocks.transpose(1, 2)).transpose(0, 1).reshape(t, rc * rn)
    if rc == 1:  # several column runs: a batch of (rn, cn) blocks whose products add up
        blocks = weight.as_strided((cc, rn, cn), (cs * s1, s0, s1), base)
        return torch.bmm(x.reshape(t, cc, cn).transpose(0, 1), blocks.transpose(1, 2)).sum(0)
    parts = [_run_matmul(x, weight, (r0 + i * rs, rn, 1, 0), cols, batched) for i in range(rc)]  # per row run
    return torch.cat(parts, dim=-1)


def _linear_by_runs(
    x: torch.Tensor, layer: nn.Linear, rows: Select, cols: Select, batched: bool | None = None
) -> torch.Tensor:
    """`sub_linear` on views of the weight (the decoding path). On a CPU, float32: one call of the few-rows
    kernel for every run (model/cpu_kernels.py) when it is built; otherwise `_runs_matmul`.
    x: (..., len(cols)) -> (..., len(rows))."""
    batched = x.device.type != "cpu" if batched is None else batched
    flat = x.reshape(-1, x.shape[-1])
    if not batched and cpu_kernels.applies(flat, layer.weight, flat.shape[0]):
        weight, index = (layer.weight[:rows], None) if isinstance(rows, int) else (layer.weight, _index(rows))
        out = cpu_kernels.few_rows(flat, weight, layer.bias, index, _segments(_runs(cols)))
    else:
        out = _runs_matmul(flat, layer, rows, cols, batched)
    return out.view(*x.shape[:-1], out.shape[-1])


def _runs_matmul(flat: torch.Tensor, layer: nn.Linear, rows: Select, cols: Select, batched: bool) -> torch.Tensor:
    """torch's products over the runs: per pair of row and column progressions, one batched matmul
    (`batched`: an accelerator's choice, one launch per progression) or one 2-D matmul per run (a CPU's, see
    `_each_run`). flat: (T, len(cols)) -> (T, len(rows))."""
    col_runs, outs = _runs(cols), []
    for rr in _runs(rows):
        acc, offset = None, 0
        for cr in col_runs:
            width = cr[1] * cr[2]
            part = _run_matmul(flat[:, offset : offset + width], layer.weight, rr, cr, batched)
            acc, offset = part if acc is None else acc + part, offset + width
        outs.append(acc)
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
    return out if layer.bias is None else out + _take(layer.bias, 0, rows)


def sub_linear(x: torch.Tensor, layer: nn.Linear, rows: Select, cols: Select) -> torch.Tensor:
    """`layer(x)` restricted to output rows `rows` and input columns `cols` of its weight.

    A prefix is a view of the weight (no copy); explicit indices gather the kept rows/columns, except for a
    handful of tokens (decoding), where each contiguous run of kept units is a view (`_linear_by_runs`).
    With the full sizes this is exactly `layer(x)`. x: (..., len(cols)) -> (..., len(rows)).
    """
    full = isinstance(rows, int) and isinstance(cols, int) and (rows, cols) == (layer.out_features, layer.in_features)
    if full:
        return layer(x)  # the module's call: forward hooks (importance scoring) see it
    if getattr(layer, "tiles", None) is not None:  # serving's tiled layout: every budget reads its own bytes
        return tiles.linear(x, layer.tiles, layer.bias, _runs(rows), _segments(_runs(cols)))
    tokens = x.numel() // max(1, x.shape[-1])
    if tokens <= SMALL_BATCH_TOKENS and not torch.is_grad_enabled():
        return _linear_by_runs(x, layer, rows, cols)
    weight = _take(_take(layer.weight, 0, rows), 1, cols)
    bias = None if layer.bias is None else _take(layer.bias, 0, rows)
    return linear(x, weight, bias)


def take(t: torch.Tensor, sel: Select, dim: int = 0) -> torch.Tensor:
    """`t` restricted to `sel` along `dim` (prefix view or gathered indices)."""
    return _take(t, dim, sel)


def scale(x: torch.Tensor, factor: torch.Tensor | None) -> torch.Tensor:
    """x * factor (broadcast over the last dim), in x's dtype; identity for None."""
    return x if factor is None else x * factor.to(x.dtype)
