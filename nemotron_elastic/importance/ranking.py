# SPDX-License-Identifier: Apache-2.0
"""Rankings: the importance order of every axis of a parent, and their `ranking.json` form.

Width axes hold, per unit, a score and an `order` (unit indices of the parent as scored, most important
first). Grouped axes are ordered *inside* their groups, so the order maps every group onto itself:
attention query heads within each KV group, Mamba heads within each B/C group (docs/METHOD.md 4.1, 5.1).
Per-layer axes are keyed by the layer index in the pattern. Depth holds the greedy drop order (least important
first) with the score of every candidate at every step, and the one-shot and Block Importance scores for
comparison.

ranking.json (written by `score_model` next to the reordered parent):

    {"format": "nemotron-elastic/ranking-v1",
     "meta": {...},                                   # calibration, aggregation, `reordered`, ...
     "hidden": {"order": [...], "scores": [...]},
     "mlp": {"1": {"order": ..., "scores": ...}, ...},  # also attention_heads, mamba_heads, mamba_head_dim
     "depth": {"method": "iterative_nmse", "drop_order": [...], "step_scores": [{"3": 0.01, ...}, ...],
               "one_shot": [...], "block_importance": [...]}}

`meta.reordered = true` says the saved weights are already permuted by these orders: in that checkpoint
every axis is sorted (the order is the identity), and a sub-model keeps prefixes (Nemotron Elastic, Sec.
"Elastic Width"; docs/METHOD.md 5).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config.model import ModelConfig
from ..io import write_json

FORMAT = "nemotron-elastic/ranking-v1"
LAYER_AXES = ("mlp", "attention_heads", "mamba_heads", "mamba_head_dim")
_AXIS_CHAR = {"mlp": "-", "attention_heads": "*", "mamba_heads": "M", "mamba_head_dim": "M"}


def order_by_scores(scores: torch.Tensor, num_groups: int = 1) -> list[int]:
    """Unit indices sorted by descending score inside each of `num_groups` contiguous groups.

    Ties keep the lower index first (stable sort), so equal scores give a deterministic order.

    Args:
        scores: (U,) one score per unit; U a multiple of num_groups.
        num_groups: groups of U / num_groups contiguous units that never mix.

    Returns:
        A permutation of range(U) mapping every group onto itself.
    """
    per_group = scores.numel() // num_groups
    grouped = scores.reshape(num_groups, per_group)  # (G, U/G)
    local = torch.argsort(grouped, dim=1, descending=True, stable=True)
    return (local + torch.arange(num_groups)[:, None] * per_group).reshape(-1).tolist()


@dataclass
class AxisRanking:
    """One axis of one layer (or the hidden axis): `order` most important first, `scores` per unit index."""

    order: list[int]
    scores: list[float]

    def to_dict(self) -> dict[str, list]:
        return {"order": list(self.order), "scores": [float(s) for s in self.scores]}


@dataclass
class DepthRanking:
    """Depth importance. `drop_order`: layers, least important first; `step_scores[t]`: layer -> normalized
    MSE of the logits with `drop_order[:t]` and that layer dropped. `one_shot` (nMSE of dropping each layer
    alone) and `block_importance` (1 - cos(block input, block output)) are per layer, for comparison."""

    drop_order: list[int]
    step_scores: list[dict[int, float]]
    one_shot: list[float]
    block_importance: list[float]
    method: str = "iterative_nmse"

    def one_shot_order(self) -> list[int]:
        """Layers by ascending one-shot nMSE (least important first)."""
        return order_by_scores(-torch.tensor(self.one_shot, dtype=torch.float64))

    def block_importance_order(self) -> list[int]:
        """Layers by ascending Block Importance (least important first)."""
        return order_by_scores(-torch.tensor(self.block_importance, dtype=torch.float64))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "drop_order": list(self.drop_order),
            "step_scores": [{str(k): float(v) for k, v in step.items()} for step in self.step_scores],
            "one_shot": [float(s) for s in self.one_shot],
            "block_importance": [float(s) for s in self.block_importance],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DepthRanking:
        return cls(
            drop_order=[int(i) for i in data["drop_order"]],
            step_scores=[{int(k): float(v) for k, v in step.items()} for step in data["step_scores"]],
            one_shot=[float(s) for s in data["one_shot"]],
            block_importance=[float(s) for s in data["block_importance"]],
            method=data.get("method", "iterative_nmse"),
        )


@dataclass
class Ranking:
    """All rankings of one parent. Layer-keyed dicts cover the layers of the matching block type."""

    hidden: AxisRanking | None = None
    mlp: dict[int, AxisRanking] = field(default_factory=dict)
    attention_heads: dict[int, AxisRanking] = field(default_factory=dict)
    mamba_heads: dict[int, AxisRanking] = field(default_factory=dict)
    mamba_head_dim: dict[int, AxisRanking] = field(default_factory=dict)
    depth: DepthRanking | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def validate(self, config: ModelConfig) -> None:
        """Check every order against the parent: a permutation of the right size, groups never mixed.

        Raises:
            ValueError: naming the first bad entry (`ranking.mamba_heads[3]: ...`).
        """
        if self.hidden is not None:
            _check_order("ranking.hidden", self.hidden.order, config.hidden_size, 1)
        for axis in LAYER_AXES:
            for layer, rank in getattr(self, axis).items():
                where = f"ranking.{axis}[{layer}]"
                if not 0 <= layer < config.num_layers or config.pattern[layer] != _AXIS_CHAR[axis]:
                    raise ValueError(
                        f"{where}: layer {layer} is not a '{_AXIS_CHAR[axis]}' layer of the parent"
                    )
                units, groups = {
                    "mlp": (config.layer_sizes(layer), 1),
                    "attention_heads": (config.layer_sizes(layer), config.num_key_value_heads),
                    "mamba_heads": (config.layer_sizes(layer), config.mamba_n_groups),
                    "mamba_head_dim": (config.mamba_head_dim, 1),
                }[axis]
                _check_order(where, rank.order, units, groups)
        if self.depth is not None:
            drop = self.depth.drop_order
            if len(set(drop)) != len(drop) or not all(0 <= i < config.num_layers for i in drop):
                raise ValueError(
                    f"ranking.depth.drop_order: must be distinct layer indices < {config.num_layers}"
                )

    # --- JSON --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format": FORMAT, "meta": self.meta}
        if self.hidden is not None:
            data["hidden"] = self.hidden.to_dict()
        for axis in LAYER_AXES:
            data[axis] = {str(layer): r.to_dict() for layer, r in sorted(getattr(self, axis).items())}
        if self.depth is not None:
            data["depth"] = self.depth.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ranking:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"ranking: not a {FORMAT} document")

        def axis(d: dict) -> AxisRanking:
            return AxisRanking([int(i) for i in d["order"]], [float(s) for s in d["scores"]])

        try:
            return cls(
                hidden=axis(data["hidden"]) if "hidden" in data else None,
                depth=DepthRanking.from_dict(data["depth"]) if "depth" in data else None,
                meta=dict(data.get("meta", {})),
                **{a: {int(k): axis(v) for k, v in data.get(a, {}).items()} for a in LAYER_AXES},
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"ranking: malformed entry ({type(err).__name__}: {err})") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write ranking.json (via a temporary file and a rename, so a reader never sees half a file)."""
        return write_json(path, self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike, config: ModelConfig | None = None) -> Ranking:
        """Read a ranking.json; with `config`, also validate it against that parent."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such ranking file") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        ranking = cls.from_dict(data)
        if config is not None:
            ranking.validate(config)
        return ranking


def _check_order(where: str, order: list[int], units: int, groups: int) -> None:
    if sorted(order) != list(range(units)):
        raise ValueError(f"{where}: order must be a permutation of range({units})")
    per_group = units // groups
    if any(order[i] // per_group != i // per_group for i in range(units)):
        raise ValueError(f"{where}: order moves a unit out of its group ({groups} groups of {per_group})")


def random_ranking(config: ModelConfig, generator: torch.Generator) -> Ranking:
    """Random group-preserving orders on every width axis and a random depth drop order (with zero scores).

    The baseline of the importance table, and the random permutations of the reorder tests.
    """

    def perm(units: int, groups: int = 1) -> AxisRanking:
        scores = torch.rand(units, generator=generator, dtype=torch.float64)
        return AxisRanking(order_by_scores(scores, groups), scores.tolist())

    ranking = Ranking(hidden=perm(config.hidden_size))
    for layer, char in enumerate(config.pattern):
        width = config.layer_sizes(layer)
        if char == "-":
            ranking.mlp[layer] = perm(width)
        elif char == "*":
            ranking.attention_heads[layer] = perm(width, config.num_key_value_heads)
        else:
            ranking.mamba_heads[layer] = perm(width, config.mamba_n_groups)
            ranking.mamba_head_dim[layer] = perm(config.mamba_head_dim)
    drop = torch.randperm(config.num_layers, generator=generator).tolist()
    zeros = [0.0] * config.num_layers
    ranking.depth = DepthRanking(drop, [], zeros, zeros, method="random")
    return ranking
