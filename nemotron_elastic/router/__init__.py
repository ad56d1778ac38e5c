# SPDX-License-Identifier: Apache-2.0
"""The budget-conditioned router: menus, the router network, decisions (masks / spec / expected sizes),
the budget loss and the temperature / logit-scale schedules."""

from .budget_loss import budget_loss
from .choices import expected_sizes, to_masks, to_spec
from .decision import CostTable, decide, within_budget
from .menus import AxisMenu, build_depth_menu, build_menu
from .router import Router, logit_scale, temperature

__all__ = [
    "AxisMenu", "CostTable", "Router", "budget_loss", "build_depth_menu", "build_menu", "decide", "expected_sizes",
    "logit_scale", "temperature", "to_masks", "to_spec", "within_budget",
]
