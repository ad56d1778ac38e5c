# SPDX-License-Identifier: Apache-2.0
"""SubnetSpec: one nested sub-model of a parent, as concrete integer sizes per axis.

JSON schema (missing keys mean "as the parent"; lists have one entry per parent layer of that type):

    {"hidden": int,
     "mlp": int | [int per MLP layer],
     "attention_heads": int | [int per attention layer],
     "mamba_heads": int | [int per Mamba layer],
     "mamba_head_dim": int,
     "layers": [kept layer indices]}

Because the parent is reordered by importance first, every size means "the first k" on its axis: hidden
channels, MLP neurons, query heads within every KV group (heads % num_kv_heads == 0), Mamba heads within
every group (heads % n_groups == 0), Mamba head channels; `layers` lists the blocks kept (the rest are
skipped: residual pass-through). A spec is bound to its parent config, which it validates against.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..io import write_json
from .model import ModelConfig

KEYS = ("hidden", "mlp", "attention_heads", "mamba_heads", "mamba_head_dim", "layers")
_PER_LAYER = {"mlp": "-", "attention_heads": "*", "mamba_heads": "M"}


def _parent_sizes(parent: ModelConfig, key: str) -> list[int]:
    return {
        "mlp": parent.mlp_sizes_per_layer,
        "attention_heads": parent.attention_heads_per_layer,
        "mamba_heads": parent.mamba_heads_per_layer,
    }[key]()


@dataclass(frozen=True)
class SubnetSpec:
    """A validated sub-model of `parent`. Per-layer lists cover every parent layer of the type (also dropped
    ones, whose entries are kept for nesting checks but do not count)."""

    parent: ModelConfig = field(repr=False, compare=False)
    hidden: int
    mlp: tuple[int, ...]
    attention_heads: tuple[int, ...]
    mamba_heads: tuple[int, ...]
    mamba_head_dim: int
    layers: tuple[int, ...]

    # --- construction ------------------------------------------------------------------------------------
    @classmethod
    def full(cls, parent: ModelConfig) -> "SubnetSpec":
        """The parent itself."""
        return cls.from_dict({}, parent)

    @classmethod
    def from_dict(cls, data: dict[str, Any], parent: ModelConfig) -> "SubnetSpec":
        """Build and validate; errors are ValueErrors naming the field (`subnet.mlp[2]: ...`)."""
        if not isinstance(data, dict):
            raise ValueError(f"subnet: expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(KEYS))
        if unknown:
            raise ValueError(f"subnet.{unknown[0]}: unknown key (allowed: {', '.join(KEYS)})")
        per_layer = {}
        for key, char in _PER_LAYER.items():
            sizes = _parent_sizes(parent, key)
            value = data.get(key, sizes)
            if isinstance(value, bool) or not isinstance(value, (int, list, tuple)):
                raise ValueError(f"subnet.{key}: expected int or list of int, got {value!r}")
            if isinstance(value, int):
                value = [value] * len(sizes)
            if len(value) != len(sizes):
                raise ValueError(
                    f"subnet.{key}: {len(value)} entries but the parent has {len(sizes)} '{char}' layers"
                )
            per_layer[key] = tuple(value)
        layers = data.get("layers", list(range(parent.num_layers)))
        if not isinstance(layers, (list, tuple)):
            raise ValueError(f"subnet.layers: expected a list of layer indices, got {layers!r}")
        spec = cls(
            parent=parent,
            hidden=data.get("hidden", parent.hidden_size),
            mamba_head_dim=data.get("mamba_head_dim", parent.mamba_head_dim),
            layers=tuple(layers),
            **per_layer,
        )
        spec.validate()
        return spec

    @classmethod
    def from_json(cls, path: str | Path, parent: ModelConfig) -> "SubnetSpec":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: subnet spec file not found")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        return cls.from_dict(data, parent)

    @classmethod
    def union(cls, specs: list["SubnetSpec"]) -> "SubnetSpec":
        """The smallest spec containing every one of `specs` (same parent): the largest size of each axis
        and layer, and every kept layer. Nested sub-models are prefixes of it, so each one runs inside it
        with prefix masks (a batch of rows of several budgets in one forward, model/batcher.py)."""
        first = specs[0]
        return cls(
            parent=first.parent,
            hidden=max(s.hidden for s in specs),
            mamba_head_dim=max(s.mamba_head_dim for s in specs),
            layers=tuple(sorted(set().union(*(s.layers for s in specs)))),
            **{key: tuple(map(max, *(getattr(s, key) for s in specs))) if len(specs) > 1 else getattr(first, key)
               for key in _PER_LAYER},
        )

    # --- validation --------------------------------------------------------------------------------------
    def validate(self) -> None:
        p = self.parent
        for key, value, limit in (("hidden", self.hidden, p.hidden_size), ("mamba_head_dim", self.mamba_head_dim, p.mamba_head_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
                raise ValueError(f"subnet.{key}: {value!r} must be an integer in [1, {limit}] (the parent's size)")
        multiple = {"mlp": 1, "attention_heads": p.num_key_value_heads, "mamba_heads": p.mamba_n_groups}
        what = {"mlp": "", "attention_heads": " (num_key_value_heads)", "mamba_heads": " (mamba_n_groups)"}
        for key in _PER_LAYER:
            for i, (value, limit) in enumerate(zip(getattr(self, key), _parent_sizes(p, key))):
                if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
                    raise ValueError(f"subnet.{key}[{i}]: {value!r} must be an integer in [1, {limit}]")
                if value % multiple[key]:
                    raise ValueError(f"subnet.{key}[{i}]: {value} is not a multiple of {multiple[key]}{what[key]}")
        if not self.layers:
            raise ValueError("subnet.layers: at least one layer must be kept")
        for i in self.layers:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < p.num_layers:
                raise ValueError(f"subnet.layers: {i!r} is not a layer index of the parent (0..{p.num_layers - 1})")
        if list(self.layers) != sorted(set(self.layers)):
            raise ValueError(f"subnet.layers: indices must be increasing and unique, got {list(self.layers)}")

    # --- derived -----------------------------------------------------------------------------------------
    def layer_width(self, layer: int) -> int:
        """The width this spec gives parent block `layer` (MLP size / query heads / Mamba heads)."""
        char = self.parent.pattern[layer]
        key = {v: k for k, v in _PER_LAYER.items()}[char]
        return getattr(self, key)[self.parent.pattern[:layer].count(char)]

    def config(self) -> ModelConfig:
        """The ModelConfig of the standalone sliced model (kept layers only; per-layer widths collapse to an
        int when all kept layers of a type agree)."""
        p = self.parent
        pattern = "".join(p.pattern[i] for i in self.layers)

        def widths(char: str) -> int | list[int]:
            kept = [self.layer_width(i) for i in self.layers if p.pattern[i] == char]
            if not kept:  # no layer of this type left: any valid value (it sizes nothing)
                return {"-": 1, "*": p.num_key_value_heads, "M": p.mamba_n_groups}[char]
            return kept[0] if len(set(kept)) == 1 else kept

        return replace(
            p,
            pattern=pattern,
            hidden_size=self.hidden,
            intermediate_size=widths("-"),
            num_attention_heads=widths("*"),
            mamba_num_heads=widths("M"),
            mamba_head_dim=self.mamba_head_dim,
        )

    def param_count(self) -> int:
        """Exact parameter count of the sliced model."""
        return self.config().num_parameters()

    def relative_to(self, outer: "SubnetSpec") -> "SubnetSpec":
        """This spec expressed against the sliced model of `outer` (which must contain it), so that
        `slice_model(slice_model(parent, outer), spec.relative_to(outer))` is this sub-model."""
        if not self.is_within(outer):
            raise ValueError("subnet: not nested in the outer spec, so it cannot be cut from its slice")
        p = self.parent
        data: dict[str, Any] = {"hidden": self.hidden, "mamba_head_dim": self.mamba_head_dim}
        for key, char in _PER_LAYER.items():
            data[key] = [self.layer_width(i) for i in outer.layers if p.pattern[i] == char]
        data["layers"] = [outer.layers.index(i) for i in self.layers]
        return SubnetSpec.from_dict(data, outer.config())

    def is_full(self) -> bool:
        return self == SubnetSpec.full(self.parent)

    def is_within(self, other: "SubnetSpec") -> bool:
        """True when this sub-model is nested in `other` (every size <=, kept layers a subset)."""
        if self.parent.pattern != other.parent.pattern:
            return False
        return (
            self.hidden <= other.hidden
            and self.mamba_head_dim <= other.mamba_head_dim
            and set(self.layers) <= set(other.layers)
            and all(
                a <= b
                for key in _PER_LAYER
                for a, b in zip(getattr(self, key), getattr(other, key))
            )
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; homogeneous per-layer sizes collapse to one int."""
        out: dict[str, Any] = {"hidden": self.hidden}
        for key in _PER_LAYER:
            values = list(getattr(self, key))
            out[key] = values[0] if len(set(values)) == 1 else values
            if not values:
                del out[key]
        out["mamba_head_dim"] = self.mamba_head_dim
        out["layers"] = list(self.layers)
        return out

    def to_json(self, path: str | Path) -> None:
        write_json(path, self.to_dict())


def resolve_spec(
    parent: ModelConfig, spec: SubnetSpec | dict | str | os.PathLike | None, where: str = "spec"
) -> SubnetSpec:
    """A SubnetSpec validated against `parent`, from a spec object, a dict, a JSON file path or None (full).

    Raises:
        ValueError: one line naming the field (`subnet.mlp[1]: ...`), or a spec bound to another parent.
        FileNotFoundError: a spec path that does not exist.
    """
    if spec is None:
        return SubnetSpec.full(parent)
    if isinstance(spec, SubnetSpec):
        if spec.parent != parent:
            raise ValueError(
                f"{where}: built for a different parent (pattern {spec.parent.pattern!r}, hidden "
                f"{spec.parent.hidden_size}) than this model (pattern {parent.pattern!r}, hidden {parent.hidden_size})"
            )
        return spec
    if isinstance(spec, dict):
        return SubnetSpec.from_dict(spec, parent)
    if isinstance(spec, (str, os.PathLike)):
        try:
            return SubnetSpec.from_json(spec, parent)
        except ValueError as e:
            msg = str(e)
            raise ValueError(msg if msg.startswith(str(spec)) else f"{spec}: {msg}") from None
    raise ValueError(f"{where}: expected a SubnetSpec, a dict or a JSON file path, got {type(spec).__name__}")
