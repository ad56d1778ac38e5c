# SPDX-License-Identifier: Apache-2.0
"""Memory accounting for many-in-one serving: shared weights once, decoding caches per request.

Measured numbers, each from its own source so that they check the cost model's predictions:

- `weight_bytes(model)`: bytes of the distinct parameter storages actually held (a tied LM head and any
  view count once). Every budget runs on slices (views) of these tensors, so this is the weight memory of
  the whole family.
- `cache_bytes(cache)`: bytes of the tensors a live `InferenceCache` holds (KV per attention layer, conv +
  SSM state per Mamba layer), measured from the tensors themselves.
- `subnet.cost.predicted_cache_bytes(...)`: the same quantity from the cost model, which the router's
  memory budgets are trained against. Tests assert measured == predicted.

`process_rss_bytes()` reads the resident set size of this process (Linux /proc; None elsewhere).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..model.decode import AttentionState, InferenceCache, MambaState


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    storage = t.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the distinct storages behind the model's parameters and buffers (shared ones once)."""
    seen: dict[tuple[int, int], int] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        key = _storage_key(t)
        seen[key] = key[1]
    return sum(seen.values())


def cache_bytes(cache: InferenceCache) -> int:
    """Bytes held by the tensors of a decoding cache (distinct storages; an empty KV cache is 0)."""
    seen: dict[tuple[int, int], int] = {}
    for state in list(cache.layers):  # a copy: another thread may be filling this cache
        if isinstance(state, AttentionState):
            tensors = (state.k, state.v)
        elif isinstance(state, MambaState):
            tensors = (state.conv, state.ssm)
        else:
            continue
        for t in tensors:
            if t.numel():
                key = _storage_key(t)
                seen[key] = t.numel() * t.element_size()
    return sum(seen.values())


def process_rss_bytes() -> int | None:
    """Resident set size of this process (VmRSS), or None where /proc is not available."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024  # reported in kB
    return None
