# SPDX-License-Identifier: Apache-2.0
"""Small functional helpers for running a layer on part of its weights (sliced sub-models)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Select = int | torch.Tensor  # a prefix length, or explicit kept indices


def _take(t: torch.Tensor, dim: int, sel: Select) -> torch.Tensor:
    if isinstance(sel, int):
        return t if sel == t.shape[dim] else t.narrow(dim, 0, sel)
    return t.index_select(dim, sel)


# With this few tokens (decoding), gathering the kept weight rows / columns costs more than computing the
# unneeded outputs from a view and dropping them: keep the weights in place and select activations instead.
SMALL_BATCH_TOKENS = 8


def sub_linear(x: torch.Tensor, layer: nn.Linear, rows: Select, cols: Select) -> torch.Tensor:
    """`layer(x)` restricted to output rows `rows` and input columns `cols` of its weight.

    A prefix is a view of the weight (no copy); explicit indices gather the kept rows/columns, except for a
    handful of tokens (decoding), where the activations are selected instead (same result, no weight copy).
    With the full sizes this is exactly `layer(x)`. x: (..., len(cols)) -> (..., len(rows)).
    """
    full = isinstance(rows, int) and isinstance(cols, int) and (rows, cols) == tuple(layer.weight.shape)
    if full:
        return layer(x)
    tokens = x.numel() // max(1, x.shape[-1])
    if tokens <= SMALL_BATCH_TOKENS and not torch.is_grad_enabled():
        if isinstance(cols, torch.Tensor):  # place the kept inputs in a zero vector of the full width
            wide = x.new_zeros(*x.shape[:-1], layer.in_features)
            x, cols = wide.index_copy(-1, cols, x), layer.in_features
        out_rows = rows if isinstance(rows, int) else layer.out_features
        y = F.linear(x, _take(_take(layer.weight, 0, out_rows), 1, cols),
                     None if layer.bias is None else _take(layer.bias, 0, out_rows))
        return y if isinstance(rows, int) else y.index_select(-1, rows)
    weight = _take(_take(layer.weight, 0, rows), 1, cols)
    bias = None if layer.bias is None else _take(layer.bias, 0, rows)
    return F.linear(x, weight, bias)


def take(t: torch.Tensor, sel: Select, dim: int = 0) -> torch.Tensor:
    """`t` restricted to `sel` along `dim` (prefix view or gathered indices)."""
    return _take(t, dim, sel)


def scale(x: torch.Tensor, factor: torch.Tensor | None) -> torch.Tensor:
    """x * factor (broadcast over the last dim), in x's dtype; identity for None."""
    return x if factor is None else x * factor.to(x.dtype)
