# SPDX-License-Identifier: Apache-2.0
"""Router menus from the `menus:` section of a training config (and the parent's depth ranking)."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import ModelConfig
from ..router.menus import AxisMenu, build_depth_menu, build_menu
from .config import MenuConfig

WIDTH_AXES = ("hidden", "mlp", "attention_heads", "mamba_heads", "mamba_head_dim")
_TYPE = {"mlp": "-", "attention_heads": "*", "mamba_heads": "M"}


def read_drop_order(ranking: Path) -> list[int]:
    """The depth drop order (least important layer first) stored by `nemotron-elastic score`."""
    data = json.loads(ranking.read_text())
    depth = data.get("depth") or {}
    order = depth.get("drop_order")
    if not isinstance(order, list):
        raise ValueError(f"{ranking}: no depth drop order (depth.drop_order); re-run `nemotron-elastic score`")
    return [int(i) for i in order]


def menus_from_config(parent: ModelConfig, menus: MenuConfig, ranking: Path | None) -> list[AxisMenu]:
    out = []
    for axis in WIDTH_AXES:
        values = getattr(menus, axis)
        if values is None:
            continue
        if axis in _TYPE and _TYPE[axis] not in parent.pattern:
            continue  # e.g. a Llama parent has no Mamba layers: nothing to make elastic there
        if axis == "mamba_head_dim" and "M" not in parent.pattern:
            continue
        out.append(build_menu(parent, axis, list(values), per_layer=axis in menus.per_layer))
    if menus.depth is not None:
        if ranking is None:
            raise ValueError("menus.depth: needs the parent's ranking.json (run `nemotron-elastic score` first)")
        out.append(build_depth_menu(parent, read_drop_order(ranking), list(menus.depth)))
    return out
