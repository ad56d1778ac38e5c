# SPDX-License-Identifier: Apache-2.0
"""From a parameter budget to a SubnetSpec without a router: shrink chosen axes by one common ratio.

Used for benchmarks, baselines (manual / uniform architectures, as compared against the router in the
paper's missing ablation) and the importance tables. Sizes are rounded down to the axis' granularity
(Mamba heads to a multiple of the groups, attention heads to a multiple of the KV heads) and never below
one unit per group. Depth is cut from the end of `drop_order` (least important layer first).
"""

from __future__ import annotations

from ..config.model import ModelConfig
from ..config.spec import SubnetSpec

WIDTH_AXES = ("hidden", "mlp", "attention_heads", "mamba_heads", "mamba_head_dim")


def _shrink(size: int, ratio: float, multiple: int = 1) -> int:
    return max(multiple, int(size * ratio) // multiple * multiple)


def spec_at_ratio(parent: ModelConfig, ratio: float, axes: tuple[str, ...] = WIDTH_AXES) -> SubnetSpec:
    """Every axis in `axes` shrunk to `ratio` of the parent (rounded down to its granularity)."""
    unknown = sorted(set(axes) - set(WIDTH_AXES))
    if unknown:
        raise ValueError(f"axes: unknown axis {unknown[0]!r} (choose from {', '.join(WIDTH_AXES)})")
    data: dict = {}
    if "hidden" in axes:
        data["hidden"] = _shrink(parent.hidden_size, ratio)
    if "mamba_head_dim" in axes:
        data["mamba_head_dim"] = _shrink(parent.mamba_head_dim, ratio)
    if "mlp" in axes:
        data["mlp"] = [_shrink(s, ratio) for s in parent.mlp_sizes_per_layer()]
    if "attention_heads" in axes:
        data["attention_heads"] = [
            _shrink(s, ratio, parent.num_key_value_heads) for s in parent.attention_heads_per_layer()
        ]
    if "mamba_heads" in axes:
        data["mamba_heads"] = [_shrink(s, ratio, parent.mamba_n_groups) for s in parent.mamba_heads_per_layer()]
    return SubnetSpec.from_dict(data, parent)


def spec_for_budget(
    parent: ModelConfig, fraction: float, axes: tuple[str, ...] = ("hidden", "mlp", "attention_heads", "mamba_heads")
) -> SubnetSpec:
    """The largest common-ratio spec on `axes` whose parameter count is <= fraction * parent's.

    Raises ValueError when even the smallest sizes on these axes exceed the budget.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction: must be in (0, 1], got {fraction}")
    target = fraction * parent.num_parameters()
    lo, hi = 0.0, 1.0
    if spec_at_ratio(parent, 1.0, axes).param_count() <= target:
        return spec_at_ratio(parent, 1.0, axes)
    if spec_at_ratio(parent, 0.0, axes).param_count() > target:
        raise ValueError(f"fraction: {fraction} is below the smallest model reachable on axes {', '.join(axes)}")
    for _ in range(40):  # bisection on the ratio; param_count is monotone in it
        mid = (lo + hi) / 2
        if spec_at_ratio(parent, mid, axes).param_count() <= target:
            lo = mid
        else:
            hi = mid
    return spec_at_ratio(parent, lo, axes)


def spec_drop_layers(parent: ModelConfig, drop_order: list[int], num_drop: int) -> SubnetSpec:
    """Keep every layer except the first `num_drop` of `drop_order` (least important first)."""
    if not 0 <= num_drop < parent.num_layers:
        raise ValueError(f"num_drop: must be in [0, {parent.num_layers - 1}], got {num_drop}")
    dropped = set(drop_order[:num_drop])
    return SubnetSpec.from_dict({"layers": [i for i in range(parent.num_layers) if i not in dropped]}, parent)
