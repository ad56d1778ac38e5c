# SPDX-License-Identifier: Apache-2.0
"""Decoding: the state one sequence keeps, and how the next token is picked.

The cache (a KV cache for attention blocks, conv + SSM states for Mamba2 blocks) is plain data threaded
explicitly through `HybridLM.forward(input_ids, cache=...)`: each mixer takes its layer's state and returns
the updated one, so incremental decoding is the same computation as the full forward pass, split in time.

Generation (model/batcher.py) runs one prefill pass, then one token per step: each step feeds only the new
token; attention reads the KV cache and Mamba2 blocks continue from their conv + SSM states, so a step costs
O(1) in the Mamba layers and O(S) in the attention layers. Batches of sequences at different lengths keep
their state in a `BatchCache` (model/batch_cache.py) instead; `SequenceRequest` and `TokenEvent` are what
the continuous batcher (model/batcher.py) takes and gives per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


def sample_next(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token from logits (B, V) -> (B,). temperature 0 is greedy (argmax)."""
    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the mass before it already reaches top_p (the top token is always kept)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@dataclass
class SequenceRequest:
    """One sequence to continue.

    prompt: token ids (non-empty); subnet: the sub-model (None: the parent); stop_token_ids: ids that end the
    row (the id is emitted, then the row leaves); seed: the sampling generator's seed (None: random);
    generator: a generator to use instead of a seeded one (rows may share it)."""

    prompt: list[int]
    max_new_tokens: int
    subnet: Any = None  # a SubnetSpec, ElasticMasks or None (the parent)
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop_token_ids: frozenset[int] = frozenset()
    generator: torch.Generator | None = None


@dataclass
class TokenEvent:
    """What a step produced for one request: a new token (None when it ended without one) and, on its last
    event, why it ended: "stop" (a stop token), "length" (max_new_tokens) or "cancelled"."""

    rid: int
    token: int | None
    finish: str | None = None
    seen: int = 0  # last event: tokens the request's cache held (prompt + completion - 1, or fewer)
    cache_bytes: int = 0  # last event: bytes of that state (the row's KV at its length + its Mamba states)
