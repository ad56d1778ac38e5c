# SPDX-License-Identifier: Apache-2.0
"""ElasticMasks: how a sub-model is realised inside the parent's forward pass.

Every axis is an `Axis`: a prefix of `size` units that the forward *slices* to (no compute beyond it),
optional `weights` over those units (a hard 0/1 prefix mask, or a soft probability-weighted one), and an
optional `scale` (the router's probability, docs/METHOD.md 7.4: the active part is multiplied by it so that
the task loss reaches the router). Three realisations of the same SubnetSpec:

- sliced:  size = the spec's size, no weights          (`ElasticMasks.from_spec(spec)`)
- masked:  size = the parent's size, 0/1 prefix weights (`ElasticMasks.from_spec(spec, masked=True)`)
- soft:    size = the largest choice with probability > 0, weights = sum_i p_i * 1[j < k_i] (`Axis.soft`)

Grouped axes count units *per group*: attention query heads per KV group and Mamba heads per B/C group, so
every group keeps the same prefix (docs/METHOD.md 5.1). Norms over a masked width normalise over the support
weighted by `weights` (not by `scale`), which makes the masked forward equal the sliced one exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config.spec import SubnetSpec


@dataclass
class Axis:
    """A prefix of `size` units, optionally weighted.

    Attributes:
        size: units kept (per group on grouped axes); the forward slices to this many.
        weights: (size,) weights in [0, 1] of the kept units, or None for all ones.
        scale: () multiplier of the active part (router probability), or None for 1.
    """

    size: int
    weights: torch.Tensor | None = None
    scale: torch.Tensor | None = None

    def factor(self) -> torch.Tensor | None:
        """What activations on this axis are multiplied by: weights * scale, (size,) or (), or None."""
        if self.weights is None:
            return self.scale
        return self.weights if self.scale is None else self.weights * self.scale

    @classmethod
    def prefix_mask(cls, size: int, full: int, scale: torch.Tensor | None = None) -> "Axis":
        """Hard mask over the parent's full width: ones on the first `size` units, zeros after."""
        weights = (torch.arange(full) < size).to(torch.get_default_dtype())
        return cls(full, weights, scale)

    @classmethod
    def soft(cls, choices: list[int], probs: torch.Tensor) -> "Axis":
        """Probability-weighted prefix mask over `choices` (sizes) with `probs` (len(choices),).

        Unit j gets weight sum_i probs_i * 1[j < choices_i]; compute stops at the largest choice whose
        probability is not exactly zero.
        """
        if len(choices) != probs.shape[-1]:
            raise ValueError(f"{len(choices)} choices but {probs.shape[-1]} probabilities")
        active = [k for k, p in zip(choices, probs.detach().tolist()) if p != 0.0]
        size = max(active) if active else max(choices)
        units = torch.arange(size, device=probs.device)
        keep = (units[None, :] < torch.tensor(choices, device=probs.device)[:, None]).to(probs.dtype)  # (C, size)
        return cls(size, probs @ keep)


@dataclass
class LayerMasks:
    """One kept block: its width axis (MLP neurons / query heads per KV group / Mamba heads per group)
    and an optional soft gate (depth: y = h + gate * mixer(h))."""

    width: Axis
    gate: torch.Tensor | None = None


@dataclass
class ElasticMasks:
    """The realisation of a sub-model inside the parent. `layers[i]` is None when parent block i is skipped."""

    hidden: Axis
    mamba_head_dim: Axis
    layers: list[LayerMasks | None]

    @classmethod
    def from_spec(cls, spec: SubnetSpec, masked: bool = False) -> "ElasticMasks":
        """Hard masks for `spec`: sliced (default; compute shrinks with the spec) or masked (full width with 0/1
        prefix weights; the reference realisation the sliced one must equal)."""
        p = spec.parent

        def axis(size: int, full: int) -> Axis:
            return Axis.prefix_mask(size, full) if masked else Axis(size)

        layers: list[LayerMasks | None] = [None] * p.num_layers
        kept = set(spec.layers)
        for i, char in enumerate(p.pattern):
            if i not in kept:
                continue
            width, full = spec.layer_width(i), p.layer_sizes(i)
            groups = {"-": 1, "*": p.num_key_value_heads, "M": p.mamba_n_groups}[char]
            layers[i] = LayerMasks(axis(width // groups, full // groups))
        return cls(axis(spec.hidden, p.hidden_size), axis(spec.mamba_head_dim, p.mamba_head_dim), layers)

    @classmethod
    def per_row(cls, specs: list[SubnetSpec], union: SubnetSpec, dtype: torch.dtype, device=None) -> "ElasticMasks":
        """Masks of a batch whose row b runs sub-model `specs[b]` inside `union` (a spec containing them all,
        `SubnetSpec.union`): every axis sliced to the union's size with (B, 1, size) 0/1 prefix weights, and a
        (B, 1, 1) 0/1 gate on every kept layer (0 where a row's sub-model drops it). One forward then runs all
        rows and each row equals its own sub-model (masked == sliced, row by row)."""

        def prefix(sizes: list[int], size: int) -> Axis:
            kept = torch.tensor(sizes, device=device)[:, None, None]  # (B, 1, 1)
            return Axis(size, (torch.arange(size, device=device)[None, None, :] < kept).to(dtype))

        parent = union.parent
        layers: list[LayerMasks | None] = [None] * parent.num_layers
        for i in union.layers:
            groups = {"-": 1, "*": parent.num_key_value_heads, "M": parent.mamba_n_groups}[parent.pattern[i]]
            widths = [s.layer_width(i) // groups for s in specs]
            kept = torch.tensor([i in s.layers for s in specs], device=device, dtype=dtype)[:, None, None]
            layers[i] = LayerMasks(prefix(widths, union.layer_width(i) // groups), kept)
        return cls(prefix([s.hidden for s in specs], union.hidden),
                   prefix([s.mamba_head_dim for s in specs], union.mamba_head_dim), layers)

    @property
    def is_per_row(self) -> bool:
        """Whether these masks differ per batch row (`per_row`: (B, 1, size) weights), not per channel only."""
        return self.hidden.weights is not None and self.hidden.weights.dim() == 3

    def take_rows(self, index: torch.Tensor) -> "ElasticMasks":
        """Per-row masks for the rows `index` (N,) of their batch: every (B, 1, .) tensor -> (N, 1, .) (a
        packed step's tokens, model/kv_store.py `RowStep.pack`); per-channel tensors stay as they are."""

        def take(t):
            return t.index_select(0, index) if t is not None and t.dim() == 3 else t

        def take_axis(a: Axis) -> Axis:
            return Axis(a.size, take(a.weights), take(a.scale))

        layers = [None if m is None else LayerMasks(take_axis(m.width), take(m.gate)) for m in self.layers]
        return ElasticMasks(take_axis(self.hidden), take_axis(self.mamba_head_dim), layers)

    def to(self, dtype: torch.dtype, device: torch.device | str | None = None) -> "ElasticMasks":
        """Cast every weight / scale / gate tensor (masks must match the activations' dtype)."""

        def cast(t):
            return None if t is None else t.to(dtype=dtype, device=device)

        def cast_axis(a: Axis) -> Axis:
            return Axis(a.size, cast(a.weights), cast(a.scale))

        layers = [None if m is None else LayerMasks(cast_axis(m.width), cast(m.gate)) for m in self.layers]
        return ElasticMasks(cast_axis(self.hidden), cast_axis(self.mamba_head_dim), layers)
