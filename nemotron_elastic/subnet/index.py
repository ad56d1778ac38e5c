# SPDX-License-Identifier: Apache-2.0
"""Index helpers: which rows / columns / channels of the parent's tensors a sub-model keeps.

One place for the layout rules, shared by the elastic forward (`model/`), the standalone slicer
(`subnet/slicing.py`) and the masks (`subnet/masks.py`), so the three cannot drift apart:

- grouped prefixes: a sub-model keeps the first `k` units *of every group* (Mamba heads per B/C group,
  query heads per KV group). Units of group g occupy [g*U, (g+1)*U) for U units per group.
- Mamba inner channels are head-major (H x P); keeping heads `h` and the first `c` head channels keeps
  channels h*P + [0, c).
- Mamba `in_proj` rows are the packed segments [z (H*P) | x (H*P) | B (G*N) | C (G*N) | dt (H)]; B and C
  are never cut. The conv runs over [x | B | C].
"""

from __future__ import annotations

import torch


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
) -> dict[str, torch.Tensor]:
    """Kept indices of one Mamba2 mixer for `heads_per_group` heads per group and `keep_dim` head channels.

    Returns:
        heads: (h,) kept heads (for dt_bias, A_log, D and the dt rows);
        inner: (h*c,) kept inner channels (z / x rows, gated-norm weight, out_proj columns);
        conv: (h*c + 2*G*N,) kept conv channels over [x | B | C];
        in_proj: (2*h*c + 2*G*N + h,) kept in_proj rows in the packed order [z | x | B | C | dt].
    """
    inner_full = num_heads * head_dim
    bc = 2 * num_groups * state_size
    heads = group_prefix(num_heads, num_groups, heads_per_group, device)
    inner = head_channels(heads, head_dim, keep_dim)
    bc_rows = torch.arange(bc, device=device)
    return {
        "heads": heads,
        "inner": inner,
        "conv": torch.cat([inner, inner_full + bc_rows]),
        "in_proj": torch.cat([inner, inner_full + inner, 2 * inner_full + bc_rows, 2 * inner_full + bc + heads]),
    }


def attention_indices(num_heads: int, num_kv_heads: int, head_dim: int, heads_per_group: int, device=None):
    """Kept query heads (first `heads_per_group` of every KV group) and their q rows / o_proj columns.

    Returns: heads (h,), channels (h*head_dim,).
    """
    heads = group_prefix(num_heads, num_kv_heads, heads_per_group, device)
    return heads, head_channels(heads, head_dim, head_dim)
