# SPDX-License-Identifier: Apache-2.0
"""Apply a Ranking to a parent as one function-preserving permutation of its weights.

After `reorder_model`, unit k of every axis is the k-th most important unit, so each sub-model is a prefix on
every axis (Mamba heads: a prefix inside every group), which is what the elastic forward, the masks and the
slicer assume (docs/METHOD.md 5: the public code only ever uses prefix masks, the checkpoint is pre-sorted).
The logits do not change: every tensor that touches an axis is permuted consistently (docs/METHOD.md 5 list):

| axis                      | tensors permuted                                                                 |
|---------------------------|----------------------------------------------------------------------------------|
| hidden (D)                | embeddings, every block norm, norm_f, lm_head columns; columns of q/k/v, up/gate, |
|                           | Mamba in_proj; rows (and bias) of o_proj, down_proj, Mamba out_proj             |
| MLP (F)                   | up/gate rows and biases, down_proj columns                                       |
| attention heads           | q_proj rows (and bias) and o_proj columns of the query heads, inside KV groups;  |
|                           | k/v untouched (the KV groups stay where they are)                                |
| Mamba heads (H)           | z, x, dt rows of in_proj; x channels of conv1d; A_log, D, dt_bias; gated-norm     |
|                           | weight; out_proj columns. Heads stay inside their B/C group; B/C untouched        |
| Mamba head channels (P)   | the same channel permutation inside every head on all of the above (not dt/A/D)  |

Why each is exact: RMSNorm is permutation-equivariant over its channels; a Mamba head's channels evolve
independently given its dt, A, D and its group's B/C; the grouped gated norm averages over a whole group,
which a within-group permutation leaves unchanged; attention heads of a KV group read the same K/V.
The depth ranking is stored, not applied (layers are skipped at run time).

Official reference (semantics): Model-Optimizer `modelopt/torch/prune/plugins/mcore_minitron.py`
(`sort_parameters` over the hidden, FFN, attention and Mamba hparams).
"""

from __future__ import annotations

import torch
from torch import nn

from ..model.attention import Attention
from ..model.hybrid import HybridLM
from ..model.layout import head_channels
from ..model.mamba2 import Mamba2Mixer
from ..model.mlp import MLP
from .ranking import Ranking


def _permute_(param: nn.Parameter | None, dim: int, index: torch.Tensor) -> None:
    """Replace `param` in place by its entries `index` along `dim` (keeps the Parameter object, so ties hold)."""
    if param is not None:
        param.data = param.data.index_select(dim, index.to(param.device))


def mamba_inner_index(heads: torch.Tensor, channels: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Inner (head-major H x P) channel indices: new channel (k, c) reads old (heads[k], channels[c]).

    Args:
        heads: (H,) head order; channels: (P,) head-channel order.

    Returns:
        (H*P,) long.
    """
    return (heads[:, None] * head_dim + channels[None, :]).reshape(-1)


def _reorder_mlp(mixer: MLP, order: torch.Tensor) -> None:
    for proj in (getattr(mixer, "gate_proj", None), mixer.up_proj):
        if proj is not None:
            _permute_(proj.weight, 0, order)
            _permute_(proj.bias, 0, order)
    _permute_(mixer.down_proj.weight, 1, order)


def _reorder_attention(mixer: Attention, heads: torch.Tensor) -> None:
    rows = head_channels(heads, mixer.head_dim, mixer.head_dim)  # (Hq*hd,) q rows / o_proj columns
    _permute_(mixer.q_proj.weight, 0, rows)
    _permute_(mixer.q_proj.bias, 0, rows)
    _permute_(mixer.o_proj.weight, 1, rows)


def _reorder_mamba(mixer: Mamba2Mixer, heads: torch.Tensor, channels: torch.Tensor) -> None:
    h, p = mixer.num_heads, mixer.head_dim
    inner_size, bc = h * p, 2 * mixer.num_groups * mixer.state_size
    inner = mamba_inner_index(heads, channels, p)  # (I,)
    bc_rows = torch.arange(bc)
    # packed rows [z (I) | x (I) | B, C (2GN) | dt (H)]: B/C keep their place (they are per group, not per head)
    rows = torch.cat([inner, inner_size + inner, 2 * inner_size + bc_rows, 2 * inner_size + bc + heads])
    _permute_(mixer.in_proj.weight, 0, rows)
    _permute_(mixer.in_proj.bias, 0, rows)
    conv = torch.cat([inner, inner_size + bc_rows])  # conv channels [x (I) | B, C (2GN)]
    _permute_(mixer.conv1d.weight, 0, conv)
    _permute_(mixer.conv1d.bias, 0, conv)
    for param in (mixer.dt_bias, mixer.A_log, mixer.D):
        _permute_(param, 0, heads)
    _permute_(mixer.norm.weight, 0, inner)
    _permute_(mixer.out_proj.weight, 1, inner)


def _reorder_hidden(model: HybridLM, order: torch.Tensor) -> None:
    # a tied lm_head is the same Parameter as the embedding table: permuted once, through the embeddings
    _permute_(model.embeddings.weight, 1, order)
    if model.lm_head.weight is not model.embeddings.weight:
        _permute_(model.lm_head.weight, 1, order)
    _permute_(model.norm_f.weight, 0, order)
    for block in model.layers:
        _permute_(block.norm.weight, 0, order)
        mixer = block.mixer
        if isinstance(mixer, MLP):
            ins, outs = [getattr(mixer, "gate_proj", None), mixer.up_proj], [mixer.down_proj]
        elif isinstance(mixer, Attention):
            ins, outs = [mixer.q_proj, mixer.k_proj, mixer.v_proj], [mixer.o_proj]
        else:
            ins, outs = [mixer.in_proj], [mixer.out_proj]
        for proj in ins:
            if proj is not None:
                _permute_(proj.weight, 1, order)
        for proj in outs:
            _permute_(proj.weight, 0, order)
            _permute_(proj.bias, 0, order)


@torch.no_grad()
def reorder_model(model: HybridLM, ranking: Ranking) -> HybridLM:
    """Permute `model`'s weights in place so that every ranked axis is sorted by importance.

    Axes absent from `ranking` (None / missing layers) are left as they are. The function computed by the
    model is unchanged (up to float rounding in the reduction order of the norms: none in float64 tests).

    Args:
        model: the parent.
        ranking: orders of the parent's units (validated against `model.config` first).

    Returns:
        The same model object.

    Raises:
        ValueError: the ranking does not fit the model (wrong sizes, a head moved across groups).
    """
    ranking.validate(model.config)

    def as_index(order: list[int]) -> torch.Tensor:
        return torch.tensor(order, dtype=torch.long)

    if ranking.hidden is not None:
        _reorder_hidden(model, as_index(ranking.hidden.order))
    for layer, block in enumerate(model.layers):
        mixer = block.mixer
        if isinstance(mixer, MLP) and layer in ranking.mlp:
            _reorder_mlp(mixer, as_index(ranking.mlp[layer].order))
        elif isinstance(mixer, Attention) and layer in ranking.attention_heads:
            _reorder_attention(mixer, as_index(ranking.attention_heads[layer].order))
        elif isinstance(mixer, Mamba2Mixer) and (
            layer in ranking.mamba_heads or layer in ranking.mamba_head_dim
        ):
            heads = ranking.mamba_heads.get(layer)
            channels = ranking.mamba_head_dim.get(layer)
            _reorder_mamba(
                mixer,
                as_index(heads.order) if heads else torch.arange(mixer.num_heads),
                as_index(channels.order) if channels else torch.arange(mixer.head_dim),
            )
    return model
