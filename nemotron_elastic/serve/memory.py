# SPDX-License-Identifier: Apache-2.0
"""Memory accounting for many-in-one serving: shared weights once, decoding caches per request.

Three numbers, each from its own source so that they check one another:

- `weight_bytes(model)`: bytes of the distinct parameter storages actually held (a tied LM head and any
  view count once). Every budget runs on slices (views) of these tensors, so this is the weight memory of
  the whole family.
- `cache_bytes(cache)`: bytes of the tensors a live `InferenceCache` holds (KV per attention layer, conv +
  SSM state per Mamba layer), measured from the tensors themselves.
- `predicted_cache_bytes(...)`: the same quantity from the cost model (`subnet.cost.memory_bytes`), which
  the router's memory budgets are trained against. Tests assert measured == predicted.

`process_rss_bytes()` reads the resident set size of this process (Linux /proc; None elsewhere).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..model.cache import AttentionState, InferenceCache, MambaState
from ..model.norm import compute_dtype
from ..subnet.cost import Sizes, memory_bytes
from ..subnet.spec import SubnetSpec


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


def _element_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def predicted_memory(spec: SubnetSpec, context: int, dtype: torch.dtype, batch: int = 1) -> dict[str, int]:
    """The cost model's weight and cache bytes of `spec` after `context` tokens, in the model's dtypes.

    The decoding cache keeps KV and conv states in the model's dtype and the SSM state in the compute dtype
    (float32 for half-precision models), as `model/mamba2.py` allocates them.

    Args:
        spec: the sub-model (`SubnetSpec.full(config)` for the parent).
        context: tokens held in the cache.
        dtype: the model's parameter dtype.
        batch: sequences decoded together.

    Returns:
        {"weights", "kv_cache", "ssm_state", "conv_state", "cache", "total"}: ints, in bytes.
    """
    elt = _element_bytes(dtype)
    out = memory_bytes(
        spec.parent,
        Sizes.from_spec(spec),
        context,
        batch,
        weight_bytes=elt,
        kv_bytes=elt,
        ssm_bytes=_element_bytes(compute_dtype(dtype)),
        conv_bytes=elt,
    )
    result = {key: round(float(value)) for key, value in out.items()}
    result["cache"] = result["kv_cache"] + result["ssm_state"] + result["conv_state"]
    return result


def predicted_cache_bytes(spec: SubnetSpec, context: int, dtype: torch.dtype, batch: int = 1) -> int:
    """Bytes of the decoding cache of `spec` after `context` tokens (see `predicted_memory`)."""
    return predicted_memory(spec, context, dtype, batch)["cache"]


def cache_profile(spec: SubnetSpec, dtype: torch.dtype) -> dict[str, int]:
    """A budget's cache cost as a line: fixed bytes (Mamba conv + SSM state) + bytes per token (KV)."""
    fixed = predicted_cache_bytes(spec, 0, dtype)
    return {"state_bytes": fixed, "kv_bytes_per_token": predicted_cache_bytes(spec, 1, dtype) - fixed}


def process_rss_bytes() -> int | None:
    """Resident set size of this process (VmRSS), or None where /proc is not available."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024  # reported in kB
    return None
