# SPDX-License-Identifier: Apache-2.0
"""The budget-conditioned router (docs/METHOD.md 7.1-7.2).

One tiny network per axis maps the budget to logits over that axis' menu:

    u = onehot(budget)  (n_budgets,)     a budget between two trained ones: linear blend of their one-hots
    z = W2 @ leaky_relu(W1 @ u, 0.1)     W1: (d_router, n_budgets), W2: (L*C or C, d_router); no biases
    probs = softmax((scale * z + g) / tau),  g ~ Gumbel(0, 1)  (g = 0 at evaluation)

`d_router` is 256 (paper), weights N(0, 0.1) (NVIDIA `--router-std 0.1`). The logit `scale` grows
linearly 1 -> 10 and `tau` decays 1.0 -> 0.05 over training (`temperature`, `logit_scale` below), which
sharpens the decisions. Budgets are kept in descending order (index 0 = the full model), as NVIDIA's `budget_list`.

Reference: NVIDIA Megatron-LM `megatron/elastification/router/hybrid_flex_router.py` (read, not copied).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .menus import AxisMenu


class Router(nn.Module):
    """Args:
        menus: one AxisMenu per elastic axis.
        budgets: the trained budgets (fractions of the parent's cost), any order; stored descending.
        hidden_dim: d_router.
        init_std: std of the normal init of both layers.
    """

    def __init__(self, menus: list[AxisMenu], budgets: list[float], hidden_dim: int = 256, init_std: float = 0.1):
        super().__init__()
        if not budgets or any(not 0.0 < b <= 1.0 for b in budgets):
            raise ValueError(f"budgets: every budget must be in (0, 1], got {budgets}")
        if len(set(budgets)) != len(budgets):
            raise ValueError(f"budgets: duplicates in {budgets}")
        if len({m.axis for m in menus}) != len(menus):
            raise ValueError("menus: one menu per axis")
        self.budgets = sorted(budgets, reverse=True)
        self.menus = {m.axis: m for m in menus}
        self.nets = nn.ModuleDict()
        for m in menus:
            self.nets[m.axis] = nn.Sequential(
                nn.Linear(len(self.budgets), hidden_dim, bias=False),
                nn.LeakyReLU(0.1),
                nn.Linear(hidden_dim, m.num_outputs, bias=False),
            )
        self.init_std = init_std
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        for p in self.parameters():
            p.normal_(0.0, self.init_std, generator=generator)

    def encode(self, budget: float) -> torch.Tensor:
        """The router input for `budget`: a one-hot over the trained budgets, or the linear blend of the two
        neighbouring one-hots for a budget in between (LLaMaFlex interpolation). -> (n_budgets,)"""
        device = next(self.parameters()).device
        u = torch.zeros(len(self.budgets), device=device)
        hi, lo = self.budgets[0], self.budgets[-1]
        if not lo - 1e-9 <= budget <= hi + 1e-9:
            raise ValueError(f"budget: {budget} is outside the trained range [{lo}, {hi}]")
        for i, b in enumerate(self.budgets):
            if abs(b - budget) < 1e-9:
                u[i] = 1.0
                return u
        i = next(i for i, b in enumerate(self.budgets) if b < budget)  # budgets[i-1] > budget > budgets[i]
        w = (self.budgets[i - 1] - budget) / (self.budgets[i - 1] - self.budgets[i])
        u[i - 1], u[i] = 1.0 - w, w
        return u

    def logits(self, budget: float) -> dict[str, torch.Tensor]:
        """Raw logits per axis: (L, C) when per layer, else (1, C)."""
        u = self.encode(budget).to(self.nets[next(iter(self.nets))][0].weight.dtype)
        return {axis: net(u).view(-1, self.menus[axis].num_choices) for axis, net in self.nets.items()}

    def scores(
        self,
        budget: float,
        tau: float = 1.0,
        scale: float = 1.0,
        gumbel: bool = True,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """(scale * z + g) / tau per axis, (L or 1, C): the log-probabilities of `probs` up to a constant per
        row, which is what a decision over several rows (`within_budget`) adds up."""
        out = {}
        for axis, z in self.logits(budget).items():
            z = z * scale
            if gumbel:
                u = torch.rand(z.shape, generator=generator, device=z.device, dtype=z.dtype)
                gumbel_noise = -torch.log((-torch.log(u.clamp_min(1e-20))).clamp_min(1e-20))  # Gumbel(0, 1)
                z = z + gumbel_noise
            out[axis] = z / tau
        return out

    def probs(
        self,
        budget: float,
        tau: float = 1.0,
        scale: float = 1.0,
        gumbel: bool = True,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Gumbel-softmax probabilities per axis, (L or 1, C); `gumbel=False` gives softmax(scale*z/tau)
        (evaluation / export: the argmax is then the router's deterministic choice)."""
        return {axis: F.softmax(s, dim=-1) for axis, s in self.scores(budget, tau, scale, gumbel, generator).items()}


# --- schedules over training (docs/METHOD.md 7.2): Gumbel temperature and logit scale --------------------
#
# - temperature: exponential decay tau_0 * r^step from `start` (1.0) to `end` (0.05) at `total` steps
#   (r = (end/start)^(1/total); NVIDIA's `tau_decay`), constant afterwards;
# - logit scale: linear from `start` (1.0) to `end` (10.0) over `total` steps.
def temperature(step: int, total: int, start: float = 1.0, end: float = 0.05) -> float:
    if total <= 0 or step >= total:
        return end if total > 0 else start
    return start * (end / start) ** (step / total)


def logit_scale(step: int, total: int, start: float = 1.0, end: float = 10.0) -> float:
    if total <= 0:
        return start
    return start + (end - start) * min(step, total) / total
