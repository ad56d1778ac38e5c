# SPDX-License-Identifier: Apache-2.0
"""Configuration of a Llama-family sub-model in NVIDIA's DeciLM / Llama-Nemotron format (model_type "nemotron-nas").

Copied into DeciLM exports written by nemotron-elastic; loaded through `auto_map` with
`AutoConfig.from_pretrained(folder, trust_remote_code=True)`. Needs only transformers.

The format is a Llama config plus `block_configs`, one entry per decoder layer:

    {"attention": {"n_heads_in_group": G or None, "no_op": bool, "replace_with_linear": false, ...},
     "ffn":       {"ffn_mult": m or None, "no_op": bool, "replace_with_linear": false, "sparsify": null}}

A layer's attention has `num_attention_heads` query heads and num_attention_heads / G KV heads, or is dropped
(`no_op`: the residual stream passes unchanged). Its MLP is dropped (`no_op`) or has the width
`ffn_width(ffn_mult, hidden_size)`: int(2 * ffn_mult * hidden_size / 3) rounded up to a multiple of 256, the rule
of NVIDIA's modeling_decilm.py that vLLM's `nemotron_nas.py` repeats (docs/SERVING.md, "Engines").

Engines read the blocks as objects (`config.block_configs[i].attention.no_op`), so they are kept as the frozen
dataclasses below and written back as dicts. Only what the modeling code implements is accepted: a block with
`replace_with_linear`, sink tokens, a window or sparsity is refused with one line naming the field.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

from transformers import PretrainedConfig

FFN_ROUNDING = 256  # the multiple every DeciLM MLP width is rounded up to


def ffn_width(ffn_mult: float, hidden_size: int) -> int:
    """The intermediate size DeciLM gives an MLP with multiplier `ffn_mult` in a model of width `hidden_size`."""
    width = int(2 * ffn_mult * hidden_size / 3)
    return -(-width // FFN_ROUNDING) * FFN_ROUNDING


@dataclass(frozen=True)
class AttentionConfig:
    """One layer's attention: KV heads = num_attention_heads / n_heads_in_group, or dropped (`no_op`)."""

    n_heads_in_group: int | None = None
    no_op: bool = False
    replace_with_linear: bool = False
    num_sink_tokens: int | None = None
    sparsify: Any = None
    unshifted_sink: bool = False
    use_prefill_window_in_sink_attention: bool = False
    window_length: int | None = None


@dataclass(frozen=True)
class FFNConfig:
    """One layer's MLP: width `ffn_width(ffn_mult, hidden_size)`, or dropped (`no_op`)."""

    ffn_mult: float | None = None
    no_op: bool = False
    replace_with_linear: bool = False
    sparsify: Any = None


@dataclass(frozen=True)
class BlockConfig:
    attention: AttentionConfig
    ffn: FFNConfig


def _block(raw: Any, i: int) -> BlockConfig:
    """A BlockConfig from a config.json entry, refusing (one line) what the modeling code does not implement."""
    if isinstance(raw, BlockConfig):
        return raw
    parts = {}
    for name, cls in (("attention", AttentionConfig), ("ffn", FFNConfig)):
        value = dict(raw.get(name) or {}) if isinstance(raw, dict) else None
        if value is None:
            raise ValueError(f"block_configs.{i}: expected an object with attention and ffn")
        unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"block_configs.{i}.{name}.{unknown[0]} is not supported")
        parts[name] = cls(**value)
    attn, ffn = parts["attention"], parts["ffn"]
    defaults = (("attention", attn, AttentionConfig(n_heads_in_group=attn.n_heads_in_group, no_op=attn.no_op)),
                ("ffn", ffn, FFNConfig(ffn_mult=ffn.ffn_mult, no_op=ffn.no_op)))  # fmt: skip
    for name, got, plain in defaults:
        for f in dataclasses.fields(got):
            if getattr(got, f.name) != getattr(plain, f.name):  # replace_with_linear, sinks, windows, sparsity
                raise ValueError(f"block_configs.{i}.{name}.{f.name} = {getattr(got, f.name)!r} is not supported")
    if not attn.no_op and not (isinstance(attn.n_heads_in_group, int) and attn.n_heads_in_group > 0):
        raise ValueError(f"block_configs.{i}.attention.n_heads_in_group: a positive integer unless no_op")
    if not ffn.no_op and not (isinstance(ffn.ffn_mult, (int, float)) and ffn.ffn_mult > 0):
        raise ValueError(f"block_configs.{i}.ffn.ffn_mult: a positive number unless no_op")
    return BlockConfig(attn, ffn)


class DeciLMConfig(PretrainedConfig):
    """A Llama config with one `block_configs` entry per decoder layer (see the module docstring).

    Args:
        block_configs: one {"attention": ..., "ffn": ...} dict (or BlockConfig) per layer.
        rope_parameters / rope_scaling / rope_theta: RoPE as in transformers' Llama (rope_scaling is the key
            published Llama-Nemotron checkpoints use; rope_parameters, when given, wins and is what is written).
        head_dim: per-head width (default hidden_size / num_attention_heads, as in published checkpoints).
        Other fields as in LlamaConfig.
    """

    model_type = "nemotron-nas"

    def __init__(
        self,
        block_configs: list | None = None,
        vocab_size: int = 256,
        hidden_size: int = 64,
        num_attention_heads: int = 4,
        head_dim: int | None = None,
        hidden_act: str = "silu",
        rms_norm_eps: float = 1e-5,
        max_position_embeddings: int = 4096,
        attention_bias: bool = False,
        mlp_bias: bool = False,
        rope_theta: float = 10000.0,
        rope_parameters: dict | None = None,
        rope_scaling: dict | None = None,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = False,
        use_cache: bool = True,
        **kwargs,
    ) -> None:
        if block_configs is None:  # a default-constructed config: one full layer
            block_configs = [{"attention": {"n_heads_in_group": 2}, "ffn": {"ffn_mult": 4.0}}]
        self.block_configs = [_block(b, i) for i, b in enumerate(block_configs)]
        for key in ("num_hidden_layers", "num_key_value_heads", "intermediate_size"):  # derived from the blocks
            kwargs.pop(key, None)
        self.num_hidden_layers = len(self.block_configs)
        groups = {b.attention.n_heads_in_group for b in self.block_configs if not b.attention.no_op}
        if len(groups) > 1:
            raise ValueError(f"block_configs: n_heads_in_group differs between layers ({sorted(groups)}); "
                             "this modeling code has one KV head count")  # fmt: skip
        if hidden_act != "silu":
            raise ValueError(f"hidden_act: {hidden_act!r} is not supported (DeciLM MLPs are SwiGLU: 'silu')")
        self.vocab_size, self.hidden_size, self.num_attention_heads = vocab_size, hidden_size, num_attention_heads
        self.head_dim = head_dim or hidden_size // num_attention_heads
        group = groups.pop() if groups else 1
        if num_attention_heads % group:
            raise ValueError(f"n_heads_in_group {group} does not divide num_attention_heads {num_attention_heads}")
        self.kv_heads = num_attention_heads // group  # not `num_key_value_heads`: published configs set that null
        self.hidden_act, self.rms_norm_eps = hidden_act, rms_norm_eps
        self.max_position_embeddings = max_position_embeddings
        self.attention_bias, self.mlp_bias = attention_bias, mlp_bias
        self.initializer_range, self.use_cache = initializer_range, use_cache
        rope = copy.deepcopy(rope_parameters or rope_scaling or {})
        rope.setdefault("rope_type", rope.pop("type", "default"))
        rope.setdefault("rope_theta", rope_theta)
        self.rope_parameters, self.rope_theta = rope, float(rope["rope_theta"])
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    def mlp_width(self, layer: int) -> int | None:
        """Layer `layer`'s MLP intermediate size, or None when its MLP is dropped."""
        ffn = self.block_configs[layer].ffn
        return None if ffn.no_op else ffn_width(ffn.ffn_mult, self.hidden_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the blocks as dicts, the keys published checkpoints carry (null where per layer)."""
        out = super().to_dict()
        out["block_configs"] = [dataclasses.asdict(b) for b in self.block_configs]
        out.pop("kv_heads", None)
        out.update(num_key_value_heads=None, intermediate_size=None)  # per layer, in block_configs
        # RoPE as transformers 5 writes it (rope_parameters + rope_theta). Not the published `rope_scaling`:
        # with rope_theta next to it, transformers 5's generic config (AutoTokenizer on a folder whose model_type
        # it does not know) fails to standardise it.
        out.pop("rope_scaling", None)
        out["rope_theta"] = self.rope_parameters["rope_theta"]
        return out
