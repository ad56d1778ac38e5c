# SPDX-License-Identifier: Apache-2.0
"""The MLP mixer ('-' blocks).

Two flavours, chosen by the config:
- NemotronH: non-gated, squared ReLU: `down(relu(up(x))^2)`;
- Llama family: gated SiLU: `down(silu(gate(x)) * up(x))`.

Official implementation: transformers `NemotronHMLP`, `LlamaMLP`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def relu2(x: torch.Tensor) -> torch.Tensor:
    """Squared ReLU (Primer), the NemotronH MLP activation."""
    return F.relu(x).square()


ACTIVATIONS = {"relu2": relu2, "silu": F.silu}


class MLP(nn.Module):
    """Args:
        hidden_size: D.
        intermediate_size: F, the elastic MLP width.
        activation: "relu2" or "silu".
        gated: add a `gate_proj` and multiply (Llama).
        bias: biases on every projection.
    Shapes: x (B, T, D) -> (B, T, D).
    """

    def __init__(self, hidden_size: int, intermediate_size: int, activation: str, gated: bool, bias: bool) -> None:
        super().__init__()
        self.act = ACTIVATIONS[activation]
        self.gated = gated
        if gated:
            self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up_proj(x)  # (B, T, F)
        h = self.act(self.gate_proj(x)) * h if self.gated else self.act(h)
        return self.down_proj(h)
