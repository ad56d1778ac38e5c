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

from .layout import Linear, scale, sub_linear
from .masks import Axis


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
            self.gate_proj = Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor, width: Axis | None = None) -> torch.Tensor:
        """x: (B, T, d) -> (B, T, d); d <= D when the hidden axis is sliced.

        width: the elastic MLP width (first `width.size` neurons; `width.factor()` multiplies the activations
        of the kept neurons: a soft / hard mask and the router scale), or None for the full layer.
        """
        d = x.shape[-1]
        n = self.up_proj.out_features if width is None else width.size
        h = sub_linear(x, self.up_proj, n, d)  # (B, T, F)
        h = self.act(sub_linear(x, self.gate_proj, n, d)) * h if self.gated else self.act(h)
        if width is not None:  # after the activation: a neuron's contribution scales linearly with its mask
            h = scale(h, width.factor())
        return sub_linear(h, self.down_proj, d, n)

