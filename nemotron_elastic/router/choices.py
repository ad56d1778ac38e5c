# SPDX-License-Identifier: Apache-2.0
"""From router probabilities to a sub-model: hard / soft masks, the argmax SubnetSpec, expected sizes.

probs: {axis: (L or 1, C)} as returned by `Router.probs`; a (1, C) row applies to every layer of the type.
Axes without a menu stay at the parent's size.

- hard (docs/METHOD.md 7.4 mode 1): per row the chosen column (the argmax, or the decision within the budget,
  `decision.py`), its prefix mask multiplied by the row's largest probability (NVIDIA multiplies by
  max(pi)) with the chosen entry's gradient, so that the task loss reaches the router; `straight_through`
  instead keeps the value 1 and passes the gradient of the probability (1 + p - stop_grad(p)).
- soft (mode 2): sum_i p_i * prefix_mask_i, computing only up to the largest choice with p > 0.
- depth: choice k drops the first k layers of the menu's drop order. Layer at drop position r is kept with
  probability sum_c p_c * [r >= k_c] (cumulative, docs/METHOD.md 7.3); soft mode gates the layer's output
  with it, hard mode drops / keeps with a straight-through gate of that probability.
"""

from __future__ import annotations

import torch

from ..config.model import ModelConfig
from ..config.spec import SubnetSpec
from ..model.masks import Axis, ElasticMasks, LayerMasks
from ..subnet.cost import Sizes
from .menus import AxisMenu

_TYPE = {"mlp": "-", "attention_heads": "*", "mamba_heads": "M"}


def _rows(menu: AxisMenu, probs: torch.Tensor) -> torch.Tensor:
    """probs broadcast to one row per layer of the axis: (L, C)."""
    return probs.expand(menu.num_rows, -1) if probs.shape[0] == 1 else probs


def _groups(parent: ModelConfig, axis: str) -> int:
    return {"attention_heads": parent.num_key_value_heads, "mamba_heads": parent.mamba_n_groups}.get(axis, 1)


def _hard_scale(row: torch.Tensor, index: int, straight_through: bool) -> torch.Tensor:
    """The scalar on the chosen mask: 1 with the probability's gradient, or the row's largest probability
    (the argmax' own when it is chosen) with the gradient of the chosen entry's, so a decision moved
    within the budget is not damped by its smaller probability."""
    p = row[index]
    if straight_through:
        return 1.0 + p - p.detach()
    return p + (row.max() - p).detach()


def _columns(menu: AxisMenu, probs: torch.Tensor, choice: torch.Tensor | None) -> torch.Tensor:
    """(L,) chosen column per row: `choice` (1 or L entries) or the argmax of each row."""
    cols = _rows(menu, probs).argmax(-1).cpu() if choice is None else torch.as_tensor(choice).long().cpu()
    return cols.expand(menu.num_rows) if cols.numel() == 1 else cols


def argmax_sizes(menus: dict[str, AxisMenu], probs: dict[str, torch.Tensor],
                 choice: dict[str, torch.Tensor] | None = None) -> dict[str, list[int]]:
    """The chosen size per axis and row (`choice`, else the argmax of each row)."""
    out = {}
    for axis, menu in menus.items():
        cols = _columns(menu, probs[axis], None if choice is None else choice[axis])
        out[axis] = menu.choices.gather(1, cols[:, None]).squeeze(1).tolist()
    return out


def keep_probs(parent: ModelConfig, menu: AxisMenu, probs: torch.Tensor) -> torch.Tensor:
    """(num_layers,) probability that each parent layer is kept under the depth distribution probs (1, C):
    the layer at drop position r survives every choice that drops at most r layers."""
    drops = menu.choices[0].to(probs.device)  # (C,) layers dropped per choice
    positions = torch.arange(len(menu.drop_order), device=probs.device)
    kept = (probs[0][None, :] * (positions[:, None] >= drops[None, :])).sum(-1)  # (R,)
    keep = torch.ones(parent.num_layers, dtype=probs.dtype, device=probs.device)
    return keep.scatter(0, torch.tensor(menu.drop_order, device=probs.device, dtype=torch.long), kept)


def to_spec(parent: ModelConfig, menus: dict[str, AxisMenu], probs: dict[str, torch.Tensor],
            choice: dict[str, torch.Tensor] | None = None) -> SubnetSpec:
    """The router's choice as a SubnetSpec: `choice` ({axis: chosen index per row}, see `within_budget`),
    else the argmax per row."""
    sizes = argmax_sizes(menus, probs, choice)
    data: dict = {}
    for axis in ("hidden", "mamba_head_dim"):
        if axis in sizes:
            data[axis] = sizes[axis][0]
    for axis in _TYPE:
        if axis in sizes:
            data[axis] = sizes[axis]
    if "depth" in sizes:
        dropped = set(menus["depth"].drop_order[: sizes["depth"][0]])
        data["layers"] = [i for i in range(parent.num_layers) if i not in dropped]
    return SubnetSpec.from_dict(data, parent)


def to_masks(
    parent: ModelConfig,
    menus: dict[str, AxisMenu],
    probs: dict[str, torch.Tensor],
    mode: str = "hard",
    straight_through: bool = False,
    choice: dict[str, torch.Tensor] | None = None,
) -> ElasticMasks:
    """ElasticMasks realising the router's decision inside the parent (differentiable in probs).

    choice: hard mode's chosen index per axis and row (`within_budget`); None: the argmax per row."""
    if mode not in ("hard", "soft"):
        raise ValueError(f"mode: expected 'hard' or 'soft', got {mode!r}")
    base = ElasticMasks.from_spec(SubnetSpec.full(parent))
    axes: dict[str, list[Axis]] = {}
    for axis, menu in menus.items():
        if axis == "depth":
            continue
        p, groups = _rows(menu, probs[axis]), _groups(parent, axis)
        choices = menu.choices.to(p.device) // groups  # units per group
        if mode == "soft":
            axes[axis] = [Axis.soft(row.tolist(), pr) for row, pr in zip(choices, p)]
        else:
            idx = _columns(menu, p, None if choice is None else choice[axis])
            axes[axis] = [
                Axis(int(row[i]), scale=_hard_scale(pr, int(i), straight_through)) for row, pr, i in zip(choices, p, idx)
            ]
    hidden = axes.get("hidden", [base.hidden])[0]
    head_dim = axes.get("mamba_head_dim", [base.mamba_head_dim])[0]
    keep, gate_for = None, {}
    if "depth" in menus:
        menu, p = menus["depth"], probs["depth"]
        keep = keep_probs(parent, menu, p)
        candidates = set(menu.drop_order[: int(menu.choices.max())])
        k = int(p[0].argmax()) if choice is None else int(choice["depth"][0])
        dropped = set(menu.drop_order[: int(menu.choices[0, k])]) if mode == "hard" else set()
        for i in candidates - dropped:
            k = keep[i]
            gate_for[i] = 1.0 + k - k.detach() if mode == "hard" else k
        if mode == "soft":
            dropped = {i for i in candidates if float(keep[i].detach()) == 0.0}
    layers: list[LayerMasks | None] = []
    rank = {c: 0 for c in "-*M"}
    for i, char in enumerate(parent.pattern):
        axis = {v: k for k, v in _TYPE.items()}[char]
        width = axes[axis][rank[char]] if axis in axes else base.layers[i].width
        rank[char] += 1
        layers.append(None if keep is not None and i in dropped else LayerMasks(width, gate_for.get(i)))
    return ElasticMasks(hidden, head_dim, layers)


def expected_sizes(parent: ModelConfig, menus: dict[str, AxisMenu], probs: dict[str, torch.Tensor]) -> Sizes:
    """Expected sizes (probs @ choices per row) and layer keep-probabilities, for the cost model."""
    ref = next(iter(probs.values()))
    full = Sizes.full(parent, dtype=ref.dtype, device=ref.device)
    values = {name: getattr(full, name) for name in ("hidden", "mlp", "attention_heads", "mamba_heads",
                                                     "mamba_head_dim", "layer_keep")}
    for axis, menu in menus.items():
        if axis == "depth":
            values["layer_keep"] = keep_probs(parent, menu, probs[axis])
            continue
        p = _rows(menu, probs[axis])
        expected = (p * menu.choices.to(p.device, p.dtype)).sum(-1)  # (L,)
        values[axis] = expected if axis in _TYPE else expected[0]
    return Sizes(**values)
