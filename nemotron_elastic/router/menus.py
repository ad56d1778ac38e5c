# SPDX-License-Identifier: Apache-2.0
"""Choice menus: the sizes the router may pick on each axis (docs/METHOD.md 7.1).

A menu is given per axis as fractions of the parent (floats in (0, 1]) or as integer sizes, and is rounded to
the axis' granularity: Mamba heads to multiples of n_groups, attention query heads to multiples of the KV
heads (heads are kept per group, docs/METHOD.md 5.1). Choices are stored largest first (index 0 = the parent's
own size for fraction 1.0), one row per layer of the axis' type:

    choices: (L, C) long   L = 1 for hidden / mamba_head_dim / depth, the number of layers of that type
                           for mlp / attention_heads / mamba_heads (so heterogeneous parents work too)

`per_layer` says whether the router picks one column per layer (heterogeneous, docs/METHOD.md 7.1
`--flex-hetero-*`) or one column for all layers. Depth choices count the layers dropped from the head of the
depth ranking (`drop_order`, least important first). `menus_from_config` builds the menus of a training
config, refusing (`check_exportable`) menus whose sub-models `router.exportable` rules out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config.model import ModelConfig
from ..config.run import MenuConfig

AXES = ("hidden", "mlp", "attention_heads", "mamba_heads", "mamba_head_dim", "depth")
PER_LAYER_AXES = ("mlp", "attention_heads", "mamba_heads")
_TYPE = {"mlp": "-", "attention_heads": "*", "mamba_heads": "M"}


@dataclass
class AxisMenu:
    """The sizes one axis may take. choices: (L, C) long, each row descending; per_layer: one decision per row."""

    axis: str
    choices: torch.Tensor
    per_layer: bool = False
    drop_order: tuple[int, ...] = ()  # depth only: parent layers, least important first

    @property
    def num_choices(self) -> int:
        return self.choices.shape[1]

    @property
    def num_rows(self) -> int:
        return self.choices.shape[0]

    @property
    def num_outputs(self) -> int:
        """Router logits for this axis: C, or L * C when per layer."""
        return self.num_choices * (self.num_rows if self.per_layer else 1)


def _granularity(parent: ModelConfig, axis: str) -> int:
    return {"attention_heads": parent.num_key_value_heads, "mamba_heads": parent.mamba_n_groups}.get(axis, 1)


def _full_sizes(parent: ModelConfig, axis: str) -> list[int]:
    return {
        "hidden": [parent.hidden_size],
        "mamba_head_dim": [parent.mamba_head_dim],
        "mlp": parent.mlp_sizes_per_layer(),
        "attention_heads": parent.attention_heads_per_layer(),
        "mamba_heads": parent.mamba_heads_per_layer(),
    }[axis]


def _resolve(value: float, full: int, multiple: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: expected a fraction in (0, 1] or a positive integer size, got {value!r}")
    if isinstance(value, float):
        if not 0.0 < value <= 1.0:
            raise ValueError(f"{where}: fraction {value} is not in (0, 1]")
        return max(multiple, int(value * full + 1e-9) // multiple * multiple)
    if not 0 < value <= full:
        raise ValueError(f"{where}: size {value} is not in [1, {full}] (the parent's size)")
    if value % multiple:
        raise ValueError(f"{where}: size {value} is not a multiple of {multiple}")
    return value


def build_menu(parent: ModelConfig, axis: str, values: list[float | int], per_layer: bool = False) -> AxisMenu:
    """A width menu from fractions / sizes. Integer sizes apply to every layer (they must fit each one)."""
    if axis not in AXES or axis == "depth":
        raise ValueError(f"menus.{axis}: unknown width axis (choose from {', '.join(AXES[:-1])})")
    if per_layer and axis not in PER_LAYER_AXES:
        raise ValueError(f"menus.{axis}: cannot be per layer (only {', '.join(PER_LAYER_AXES)})")
    if not values:
        raise ValueError(f"menus.{axis}: empty menu")
    fulls = _full_sizes(parent, axis)
    if not fulls:
        raise ValueError(f"menus.{axis}: the parent has no '{_TYPE[axis]}' layers")
    multiple = _granularity(parent, axis)
    if len(set(values)) != len(values):
        raise ValueError(f"menus.{axis}: duplicate choices in {values}")
    # Fractions that round to the same size on a small layer stay as separate (equal) choices, so every
    # row has the same length; the router may pick either.
    rows = [sorted((_resolve(v, full, multiple, f"menus.{axis}") for v in values), reverse=True) for full in fulls]
    return AxisMenu(axis, torch.tensor(rows, dtype=torch.long), per_layer)


def build_depth_menu(parent: ModelConfig, drop_order: list[int], num_drops: list[int]) -> AxisMenu:
    """Depth choices: how many layers to drop from the head of `drop_order` (0 = keep all)."""
    if sorted(set(drop_order)) != sorted(drop_order) or any(not 0 <= i < parent.num_layers for i in drop_order):
        raise ValueError(f"menus.depth: drop_order must be distinct layer indices of the parent, got {drop_order}")
    for k in num_drops:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= min(len(drop_order), parent.num_layers - 1):
            raise ValueError(f"menus.depth: cannot drop {k!r} layers (drop order has {len(drop_order)})")
    row = sorted(set(num_drops))
    if len(row) != len(num_drops):
        raise ValueError(f"menus.depth: duplicate choices in {num_drops}")
    return AxisMenu("depth", torch.tensor([row], dtype=torch.long), per_layer=False, drop_order=tuple(drop_order))


# --- menus from the `menus:` section of a training config (and the parent's depth ranking) ---------------
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


# NVIDIA's heterogeneous per-layer format of each family ("puzzle" in router.exportable); other families have none.
PER_LAYER_FORMATS = {"nemotron_h": "Puzzle", "llama": "DeciLM"}
# DeciLM gives an MLP int(2 * ffn_mult * hidden / 3) rounded up to a multiple of 256 (checkpoint/decilm.py,
# docs/SERVING.md "Engines"): exactly the multiples of 256 are expressible (at any hidden size below ~3e6).
DECILM_FFN_ROUNDING = 256


def check_exportable(parent: ModelConfig, menus: MenuConfig, exportable: str) -> None:
    """Refuse menus whose sub-models would not all export to `exportable` ("stock", "puzzle" or "any"; the
    config's router.exportable), in one line naming the key.

    stock: one width per axis (no per-layer menus); a Llama-family parent's depth menu drops single blocks,
    which no stock config expresses. puzzle: NVIDIA's per-layer format of the parent's family, so per-layer
    MLP widths only and global heads: Puzzle for NemotronH (relu2 MLPs, any depth), DeciLM for Llama (any
    depth; every MLP width the menus can pick a multiple of 256). Qwen2 / Qwen3 / Mistral have no such format.
    """
    if exportable == "any":
        return
    fix = "; set router.exportable=any to allow it"
    fmt = PER_LAYER_FORMATS.get(parent.family)
    if exportable == "puzzle" and fmt is None:
        raise ValueError(f"router.exportable: puzzle means NVIDIA's per-layer format of the parent's family (Puzzle "
                         f"for nemotron_h, DeciLM for llama); a {parent.family} parent has none (use stock or any)")
    per_layer = [axis for axis in menus.per_layer if getattr(menus, axis) is not None]
    bad = [axis for axis in per_layer if axis != "mlp" or exportable == "stock"]
    if bad:
        kind = f"the {fmt} format (per-layer MLP widths only)" if exportable == "puzzle" else "stock classes"
        raise ValueError(f"menus.per_layer: {', '.join(bad)} per layer cannot be exported to {kind} "
                         f"(router.exportable={exportable}){fix}")  # fmt: skip
    if parent.family == "nemotron_h":
        if per_layer and parent.mlp_activation != "relu2":
            raise ValueError(f"menus.per_layer: per-layer mlp exports to the Puzzle format only from a NemotronH "
                             f"parent with relu2 MLPs (router.exportable=puzzle){fix}")  # fmt: skip
        return
    if menus.depth is not None and exportable == "stock":
        also = " in the DeciLM format (router.exportable=puzzle) or" if fmt else ""
        raise ValueError(f"menus.depth: dropping single blocks of a {parent.family} parent exports only{also} with "
                         f"own modeling code, not to stock classes (router.exportable=stock){fix}")  # fmt: skip
    if per_layer or menus.depth is not None:  # a Llama sub-model that only DeciLM expresses: its widths must fit
        mlp = build_menu(parent, "mlp", list(menus.mlp), "mlp" in menus.per_layer) if menus.mlp is not None else None
        widths = sorted(set(mlp.choices.flatten().tolist() if mlp is not None else parent.mlp_sizes_per_layer()))
        odd = [w for w in widths if w % DECILM_FFN_ROUNDING]
        if odd:
            raise ValueError(f"menus.mlp: MLP width {odd[0]} is not a multiple of {DECILM_FFN_ROUNDING}, which the "
                             f"DeciLM format needs (router.exportable=puzzle on a llama parent){fix}")  # fmt: skip


def menus_from_config(
    parent: ModelConfig, menus: MenuConfig, ranking: Path | None, exportable: str = "any"
) -> list[AxisMenu]:
    """The menus of a training config's `menus:` section; `exportable` is its router.exportable."""
    check_exportable(parent, menus, exportable)
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
