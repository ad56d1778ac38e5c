# SPDX-License-Identifier: Apache-2.0
"""Differentiable cost model: parameters and inference memory of a sub-model, as functions of its sizes.

The router's budget loss (docs/METHOD.md 7.3, docs/DESIGN.md 3.7) needs the cost of the sub-model it picks as
a function of its probabilities. `Sizes` holds the sizes as float tensors, so they may be *expected* sizes
(per axis, per layer: `probs @ choices`) and layer keep-probabilities for depth. With the integer sizes of a
`SubnetSpec` (`Sizes.from_spec`) the counts are exact: `param_count` equals `spec.param_count()` and the
sliced model's parameter count, and `memory_bytes` the bytes of its weights and of its filled decoding cache.

Linearity. Every count is multilinear: of degree one in each size separately. An MLP layer costs
`keep * (d + 2*d*w)` parameters (ungated, no bias), a Mamba layer has `d*h*P`, `h*P*N`, ... terms. So:
- along one axis (the others fixed) the cost of the expected size *is* the expected cost, exactly, also for
  per-layer choices (the cost is a sum over layers);
- across axes the cost has products (hidden x MLP width x layer keep, hidden x Mamba heads x head dim,
  Mamba heads x head dim in the SSM / conv state). The expected cost equals the cost of the expected sizes
  when those axes are chosen independently; when the choices are correlated (e.g. one joint choice sets
  hidden and MLP width together) they differ by the covariance terms, E[d*w] - E[d]*E[w] = Cov(d, w).
As the paper's public code does (docs/METHOD.md 7.3: `P(probs @ choices)`), the router uses the cost of the
expected sizes; layer keep-probabilities (e.g. cumulative skip probabilities along the depth ranking)
enter linearly, one per layer.

Precision: counts reach 1e10 (12.3B for Nano V2 12B), exact in float64 (the default); float32 sizes give
float32 costs (relative error ~1e-7, fine for a loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

from ..config.model import ModelConfig
from ..config.spec import SubnetSpec
from ..model.norm import compute_dtype

SizeLike = torch.Tensor | float | Sequence[float]
_PER_LAYER = {"mlp": "-", "attention_heads": "*", "mamba_heads": "M"}


@dataclass
class Sizes:
    """Sizes of one sub-model of a parent, as float tensors (or Python numbers).

    Per-layer fields run over the PARENT's layers of that type, in layer order (also layers that are
    dropped: their keep is 0); a scalar there means the same size in every such layer.

    Attributes:
        hidden: () hidden size.
        mlp: (num '-' layers,) MLP intermediate size.
        attention_heads: (num '*' layers,) query heads (KV heads are never cut).
        mamba_heads: (num 'M' layers,) Mamba heads (all groups together).
        mamba_head_dim: () Mamba head dim, shared by all Mamba layers.
        layer_keep: (num_layers,) in [0, 1]: probability (or 0/1 indicator) that each parent layer is kept.
    """

    hidden: SizeLike
    mlp: SizeLike
    attention_heads: SizeLike
    mamba_heads: SizeLike
    mamba_head_dim: SizeLike
    layer_keep: SizeLike

    @classmethod
    def from_spec(cls, spec: SubnetSpec, dtype: torch.dtype = torch.float64, device=None) -> "Sizes":
        """The exact sizes of a SubnetSpec (layer_keep is the 0/1 indicator of `spec.layers`)."""
        keep = torch.zeros(spec.parent.num_layers, dtype=dtype, device=device)
        keep[list(spec.layers)] = 1.0

        def tensor(value) -> torch.Tensor:
            return torch.tensor(value, dtype=dtype, device=device)

        return cls(
            hidden=tensor(spec.hidden),
            mlp=tensor(spec.mlp),
            attention_heads=tensor(spec.attention_heads),
            mamba_heads=tensor(spec.mamba_heads),
            mamba_head_dim=tensor(spec.mamba_head_dim),
            layer_keep=keep,
        )

    @classmethod
    def full(cls, parent: ModelConfig, dtype: torch.dtype = torch.float64, device=None) -> "Sizes":
        """The parent's own sizes (every layer kept)."""
        return cls.from_spec(SubnetSpec.full(parent), dtype, device)

    def resolve(self, parent: ModelConfig) -> "Sizes":
        """Checked tensors of one floating dtype and device, per-layer fields expanded to their full length.

        The dtype is the promotion of the floating tensors given (float64 when there are none); gradients
        flow through the conversion.

        Raises:
            ValueError: a field has the wrong shape for `parent` (the message names the field).
        """
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        tensors = [v for v in values.values() if isinstance(v, torch.Tensor)]
        floats = [t.dtype for t in tensors if t.is_floating_point()]
        dtype = torch.float64
        if floats:
            dtype = floats[0]
            for other in floats[1:]:
                dtype = torch.promote_types(dtype, other)
        device = tensors[0].device if tensors else None
        counts = {key: parent.pattern.count(char) for key, char in _PER_LAYER.items()}
        counts["layer_keep"] = parent.num_layers
        out = {}
        for name, value in values.items():
            t = torch.as_tensor(value, dtype=dtype, device=device)
            if name in ("hidden", "mamba_head_dim"):
                if t.dim() != 0:
                    raise ValueError(f"sizes.{name}: expected a scalar, got shape {tuple(t.shape)}")
            elif t.dim() == 0:
                t = t.expand(counts[name])
            elif t.dim() != 1 or t.shape[0] != counts[name]:
                what = "layers" if name == "layer_keep" else f"'{_PER_LAYER[name]}' layers"
                raise ValueError(
                    f"sizes.{name}: shape {tuple(t.shape)} but the parent has {counts[name]} {what}"
                )
            out[name] = t
        return Sizes(**out)


def _layer_index(parent: ModelConfig, char: str, device) -> torch.Tensor:
    """Parent layer indices of type `char` -> (count,) long."""
    index = [i for i, c in enumerate(parent.pattern) if c == char]
    return torch.tensor(index, dtype=torch.long, device=device)


def layer_params(parent: ModelConfig, sizes: Sizes) -> torch.Tensor:
    """Parameters of every parent layer at its size, block pre-norm included, not weighted by layer_keep.

    Args:
        parent: the parent config (fixes vocab, KV heads, head dims, groups, state size, kernel, biases).
        sizes: the sub-model's sizes.

    Returns:
        (num_layers,) float tensor, differentiable in the sizes.
    """
    s, p = sizes.resolve(parent), parent
    d = s.hidden
    # MLP: up (+ gate when gated) d -> w and down w -> d
    n_in = 2 if p.mlp_gated else 1
    mlp = (n_in + 1) * d * s.mlp + int(p.mlp_bias) * (n_in * s.mlp + d)
    # attention: q / o scale with the query heads; k / v keep all KV heads, only their input width shrinks;
    # biases: q, k, v rows and o_proj's d outputs; q_norm / k_norm: one hd weight each, whatever the heads
    q, kv = s.attention_heads * p.head_dim, p.num_key_value_heads * p.head_dim
    attn = 2 * d * q + 2 * d * kv + int(p.attention_bias) * (q + 2 * kv) + int(p.o_proj_bias) * d
    attn = attn + 2 * p.head_dim * int(p.attention_qk_norm)
    # Mamba: in_proj rows [z | x | B | C | dt]; B and C (2*G*N) are never cut, so they do not scale with h
    h = s.mamba_heads
    inner = h * s.mamba_head_dim  # (num 'M',): heads x head dim, the product that makes it nonlinear
    conv_dim = inner + 2 * p.mamba_n_groups * p.ssm_state_size
    proj = inner + conv_dim + h
    mamba = d * proj + inner * d + int(p.mamba_proj_bias) * (proj + d)
    mamba = mamba + conv_dim * (p.conv_kernel + int(p.use_conv_bias)) + 3 * h + inner  # conv, dt/A/D, norm
    out = torch.zeros(p.num_layers, dtype=d.dtype, device=d.device)
    for char, cost in (("-", mlp), ("*", attn), ("M", mamba)):
        out = out.index_copy(0, _layer_index(p, char, d.device), cost)  # out of place: keeps the graph
    return out + d  # every block's pre-norm


def param_count(parent: ModelConfig, sizes: Sizes) -> torch.Tensor:
    """Total parameters of the sub-model (tied embeddings counted once), differentiable in the sizes.

    Embeddings, LM head and final norm depend on hidden only; every layer's parameters are weighted by
    its keep. Exact for the sizes of a SubnetSpec (in float64).

    Returns:
        () float tensor.
    """
    s = sizes.resolve(parent)
    tables = 1 if parent.tie_word_embeddings else 2
    return parent.vocab_size * tables * s.hidden + s.hidden + (s.layer_keep * layer_params(parent, s)).sum()


def memory_bytes(
    parent: ModelConfig,
    sizes: Sizes,
    context: int,
    batch: int = 1,
    weight_bytes: float = 2,
    kv_bytes: float = 2,
    ssm_bytes: float = 4,
    conv_bytes: float | None = None,
) -> dict[str, torch.Tensor]:
    """Inference memory of the sub-model: weights plus the decoding cache after `context` tokens.

    The cache matches `model/decode.py`: per kept attention layer k and v (batch, Hkv, context, head_dim);
    per kept Mamba layer the conv state (batch, h*P + 2*G*N, K-1) and the SSM state (batch, h, P, N).
    KV heads are never cut, so the KV cache shrinks only by dropping attention layers. A half-precision
    model keeps its SSM state in float32 (hence the default 4 bytes) and its conv state in its own dtype.

    Args:
        parent: the parent config.
        sizes: the sub-model's sizes.
        context: tokens held in the cache.
        batch: sequences decoded together.
        weight_bytes / kv_bytes / ssm_bytes: bytes per element of weights, KV cache, SSM state.
        conv_bytes: bytes per element of the conv state; None: weight_bytes.

    Returns:
        {"weights", "kv_cache", "ssm_state", "conv_state", "total"}: () float tensors, in bytes.
    """
    if isinstance(context, bool) or not isinstance(context, int) or context < 0:
        raise ValueError(f"context: must be a non-negative integer, got {context!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch: must be a positive integer, got {batch!r}")
    conv_bytes = weight_bytes if conv_bytes is None else conv_bytes
    per_element = {"weight_bytes": weight_bytes, "kv_bytes": kv_bytes, "ssm_bytes": ssm_bytes}
    for name, value in (per_element | {"conv_bytes": conv_bytes}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name}: must be a positive number of bytes, got {value!r}")
    s, p = sizes.resolve(parent), parent
    keep = s.layer_keep
    attn_keep = keep[_layer_index(p, "*", keep.device)]
    mamba_keep = keep[_layer_index(p, "M", keep.device)]
    kv_per_layer = 2 * batch * context * p.num_key_value_heads * p.head_dim * kv_bytes
    inner = s.mamba_heads * s.mamba_head_dim  # (num 'M',)
    conv_dim = inner + 2 * p.mamba_n_groups * p.ssm_state_size
    out = {
        "weights": param_count(p, s) * weight_bytes,
        "kv_cache": attn_keep.sum() * kv_per_layer,
        "ssm_state": (mamba_keep * inner).sum() * (batch * p.ssm_state_size * ssm_bytes),
        "conv_state": (mamba_keep * conv_dim).sum() * (batch * (p.conv_kernel - 1) * conv_bytes),
    }
    out["total"] = out["weights"] + out["kv_cache"] + out["ssm_state"] + out["conv_state"]
    return out


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
