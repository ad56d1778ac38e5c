# SPDX-License-Identifier: Apache-2.0
"""Slice a parent to a SubnetSpec: a standalone, plain `HybridLM` holding only the kept weights.

The kept rows / columns come from `model/layout.py`, the same helpers the elastic forward uses, so the
standalone model computes exactly the function of `parent(x, subnet=spec)`:
- the Mamba grouped gated norm stays exact because every group keeps the same number of heads, and the
  kept channels of a group stay contiguous (its group size becomes heads_per_group * head_dim);
- the attention softmax scale stays 1/sqrt(head_dim) because head_dim is never cut; so do q_norm / k_norm
  (Qwen3), whose one weight over head_dim serves every head;
- dropped layers simply disappear (the residual stream passed through them).
"""

from __future__ import annotations

import torch

from ..config.spec import SubnetSpec
from ..model.hybrid import HybridLM
from ..model.layout import Select, attention_indices, mamba_indices, take


def _cut(t: torch.Tensor, rows: Select | None = None, cols: Select | None = None) -> torch.Tensor:
    """Rows / columns of t: an int keeps a prefix, a tensor explicit indices, None everything.

    Prefixes (views) are taken before gathers, so a gather copies only what is kept and its result is the
    final, contiguous tensor (gathering first would copy whole rows that a prefix then cuts)."""
    cuts = [(dim, sel) for dim, sel in ((0, rows), (1, cols)) if sel is not None]
    for dim, sel in sorted(cuts, key=lambda c: isinstance(c[1], torch.Tensor)):
        t = take(t, sel, dim)
    return t


def slice_state_dict(parent: HybridLM, spec: SubnetSpec) -> dict[str, torch.Tensor]:
    """The sliced model's state dict (native names, layers renumbered), as new tensors (clones)."""
    p = parent.config
    if spec.parent != p:
        raise ValueError("subnet: the spec was built for a different parent config")
    if any(getattr(m, "tiles", None) is not None for m in [*parent.layers.modules(), parent.lm_head]):
        raise ValueError("parent: its weights are in serving's tiles (use_tiled_weights(False) first)")
    d = spec.hidden
    out: dict[str, torch.Tensor] = {
        "embeddings.weight": _cut(parent.embeddings.weight, cols=d),
        "norm_f.weight": parent.norm_f.weight[:d],
    }
    if not p.tie_word_embeddings:
        out["lm_head.weight"] = _cut(parent.lm_head.weight, cols=d)
    for new, old in enumerate(spec.layers):
        block, pre, width = parent.layers[old], f"layers.{new}.", spec.layer_width(old)
        mixer = block.mixer
        out[pre + "norm.weight"] = block.norm.weight[:d]
        sel: dict[str, tuple] = {}
        if block.block_type == "-":
            for name in ("gate_proj", "up_proj"):
                sel[name] = (width, d)
            sel["down_proj"] = (d, width)
        elif block.block_type == "*":
            _, ch = attention_indices(mixer.num_heads, mixer.num_kv_heads, mixer.head_dim, width // p.num_key_value_heads)
            sel.update(q_proj=(ch, d), k_proj=(None, d), v_proj=(None, d), o_proj=(d, ch))
            if mixer.q_norm is not None:
                out[pre + "mixer.q_norm.weight"] = mixer.q_norm.weight
                out[pre + "mixer.k_norm.weight"] = mixer.k_norm.weight
        else:
            idx = mamba_indices(
                mixer.num_heads, mixer.head_dim, mixer.num_groups, mixer.state_size,
                width // mixer.num_groups, spec.mamba_head_dim,
            )
            sel.update(in_proj=(idx.in_proj, d), out_proj=(d, idx.inner), conv1d=(idx.conv, None))
            for name in ("dt_bias", "A_log", "D"):
                out[pre + f"mixer.{name}"] = getattr(mixer, name).index_select(0, idx.heads)
            out[pre + "mixer.norm.weight"] = mixer.norm.weight.index_select(0, idx.inner)
        for name, (rows, cols) in sel.items():
            module = getattr(mixer, name, None)
            if module is None:  # gate_proj of a non-gated MLP
                continue
            out[pre + f"mixer.{name}.weight"] = _cut(module.weight, rows, cols)
            if module.bias is not None:
                out[pre + f"mixer.{name}.bias"] = _cut(module.bias, rows)
    # Gathered tensors (index_select) are new already; views of the parent (prefixes, whole tensors) are
    # copied: one copy of the kept weights in all, not two (a large export holds no second copy).
    parent_storages = {t.untyped_storage().data_ptr() for t in parent.state_dict().values()}
    return {k: v.detach().clone(memory_format=torch.contiguous_format)
            if v.untyped_storage().data_ptr() in parent_storages or not v.is_contiguous() else v.detach()
            for k, v in out.items()}


def slice_model(parent: HybridLM, spec: SubnetSpec) -> HybridLM:
    """A standalone model of `spec.config()` with the parent's kept weights (same dtype and device)."""
    state = slice_state_dict(parent, spec)
    with torch.device("meta"):
        model = HybridLM(spec.config())
    if model.config.tie_word_embeddings:
        state["lm_head.weight"] = state["embeddings.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    return model.train(parent.training)
