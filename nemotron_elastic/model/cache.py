# SPDX-License-Identifier: Apache-2.0
"""Decoding state: a KV cache for attention blocks and conv + SSM states for Mamba2 blocks.

The cache is plain data threaded explicitly through `HybridLM.forward(input_ids, cache=...)`: each mixer
takes its layer's state and returns the updated one, so incremental decoding is the same computation as the
full forward pass, split in time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class AttentionState:
    """Keys and values of all tokens seen so far. k, v: (B, Hkv, S, hd)."""

    k: torch.Tensor
    v: torch.Tensor


@dataclass
class MambaState:
    """conv: (B, conv_dim, K-1), the last K-1 conv inputs [x|B|C] (zeros before the sequence start).
    ssm: (B, H, P, N), the SSM hidden state after the last token."""

    conv: torch.Tensor
    ssm: torch.Tensor


@dataclass
class InferenceCache:
    """Per-block decoding state (None for MLP blocks and for blocks not run yet) and the token count.

    Create an empty one with `InferenceCache.for_layers(num_layers)`; `HybridLM.forward` fills it.
    """

    layers: list[AttentionState | MambaState | None] = field(default_factory=list)
    seen: int = 0  # tokens already consumed; the position of the next token

    @classmethod
    def for_layers(cls, num_layers: int) -> "InferenceCache":
        return cls(layers=[None] * num_layers, seen=0)

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows (beam search / dropping finished rows). index: (B',) long."""
        for state in self.layers:
            if isinstance(state, AttentionState):
                state.k, state.v = state.k[index], state.v[index]
            elif isinstance(state, MambaState):
                state.conv, state.ssm = state.conv[index], state.ssm[index]
