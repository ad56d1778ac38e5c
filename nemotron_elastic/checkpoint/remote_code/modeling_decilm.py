# SPDX-License-Identifier: Apache-2.0
"""A Llama-family sub-model in NVIDIA's DeciLM / Llama-Nemotron format: decoder layers whose attention or MLP
may be dropped and whose MLP widths differ (configuration_decilm.py).

Copied into DeciLM exports written by nemotron-elastic and loaded with

    AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)

Needs only torch and transformers (the attention and MLP modules are those of mixers_elastic_hybrid.py, copied
alongside). Each layer computes, skipping a dropped half:

    h = h + self_attn(input_layernorm(h));  h = h + mlp(post_attention_layernorm(h))

with transformers' Llama names (`model.embed_tokens`, `model.layers.{i}.self_attn.{q,k,v,o}_proj`,
`model.layers.{i}.mlp.{gate,up,down}_proj`, the two layer norms, `model.norm`, `lm_head`), which are the names
vLLM's `DeciLMForCausalLM` loads. RoPE: default, or a scaled type (linear, dynamic, yarn, longrope, llama3) with
frequencies and attention factor from transformers' public `ROPE_INIT_FUNCTIONS`. `generate` works with a
decoding cache of its own (keys and values per attention layer) or with `use_cache=False`.

Shapes: B batch, T new tokens, D hidden, hd head dim.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_decilm import DeciLMConfig
from .mixers_elastic_hybrid import MLP, Attention, RotaryEmbedding
from .ssd_elastic_hybrid import rms_norm

# transformers 5.x names the output field `cache`; older releases called it `past_key_values`.
_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class DeciLMCache:
    """(keys, values) of every attention layer (None elsewhere) and the number of tokens seen."""

    is_compileable = False
    is_croppable = False

    def __init__(self, num_layers: int) -> None:
        self.layers: list[tuple | None] = [None] * num_layers
        self.seen = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.layers = [None if s is None else tuple(t.index_select(0, beam_idx.to(t.device)) for t in s)
                       for s in self.layers]  # fmt: skip


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class DeciLMDecoderLayer(nn.Module):
    """One decoder layer; `self_attn` / `mlp` (and their norms) are absent when the block config drops them."""

    def __init__(self, config: DeciLMConfig, layer: int) -> None:
        super().__init__()
        block = config.block_configs[layer]
        d, eps = config.hidden_size, config.rms_norm_eps
        view = SimpleNamespace(hidden_size=d, head_dim=config.head_dim, num_key_value_heads=config.kv_heads,
                               attention_bias=config.attention_bias, mlp_bias=config.mlp_bias, mlp_gated=True,
                               mlp_activation="silu")  # fmt: skip
        self.has_attn, width = not block.attention.no_op, config.mlp_width(layer)
        if self.has_attn:
            self.input_layernorm = RMSNorm(d, eps)
            self.self_attn = Attention(view, config.num_attention_heads)
        if width is not None:
            self.post_attention_layernorm = RMSNorm(d, eps)
            self.mlp = MLP(view, width)

    def forward(self, h, rope, state, key_mask):
        if self.has_attn:
            y, state = self.self_attn(self.input_layernorm(h), rope, state, key_mask)
            h = h + y
        if hasattr(self, "mlp"):
            h = h + self.mlp(self.post_attention_layernorm(h))
        return h, state


class DeciLMPreTrainedModel(PreTrainedModel):
    config_class = DeciLMConfig
    base_model_prefix = "model"
    _no_split_modules: ClassVar[list[str]] = ["DeciLMDecoderLayer"]
    _is_stateful = True
    supports_gradient_checkpointing = False

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model builds its own DeciLMCache on the first forward with use_cache

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialise a freshly built model; never touches a tensor loaded from a checkpoint."""

        def fresh(p: torch.Tensor | None) -> bool:
            return p is not None and not getattr(p, "_is_hf_initialized", False)

        if isinstance(module, (nn.Linear, nn.Embedding)):
            if fresh(module.weight):
                module.weight.normal_(0.0, self.config.initializer_range)
            if isinstance(module, nn.Linear) and fresh(module.bias):
                module.bias.zero_()
        elif isinstance(module, RMSNorm) and fresh(module.weight):
            module.weight.fill_(1.0)


class DeciLMModel(DeciLMPreTrainedModel):
    """Embeddings, decoder layers, final norm. forward -> hidden states (B, T, D)."""

    def __init__(self, config: DeciLMConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DeciLMDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = RotaryEmbedding(config.rope_parameters, config.head_dim, config.max_position_embeddings)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None):
        h = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, D)
        bsz, t = h.shape[:2]
        start = 0 if cache is None else cache.seen
        key_mask = None
        if attention_mask is not None and attention_mask.dim() == 2 and not bool(attention_mask.all()):
            key_mask = attention_mask[:, -(start + t) :].bool()  # (B, S) over cached + new tokens
        if position_ids is None:
            position_ids = torch.arange(start, start + t, device=h.device)
        rope = self.rotary(position_ids, start + t, h.dtype)
        for i, layer in enumerate(self.layers):
            state = None
            if cache is not None and layer.has_attn:
                state = cache.layers[i] or layer.self_attn.empty_state(bsz, h)
            h, state = layer(h, rope, state, key_mask)
            if cache is not None:
                cache.layers[i] = state
        if cache is not None:
            cache.seen += t
        return self.norm(h)


class DeciLMForCausalLM(DeciLMPreTrainedModel, GenerationMixin):
    """DeciLMModel + LM head (tied to the embeddings when `tie_word_embeddings`)."""

    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: DeciLMConfig) -> None:
        super().__init__(config)
        self.model = DeciLMModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                labels=None, use_cache=None, logits_to_keep: int = 0, return_dict=None, **kwargs):  # fmt: skip
        """input_ids (B, T) -> CausalLMOutputWithPast(logits (B, T, V), loss with `labels`, cache)."""
        cache = kwargs.pop("past_key_values", cache)  # the pre-5.x name
        if cache is not None and not isinstance(cache, DeciLMCache):
            if cache.get_seq_length() != 0:  # a transformers Cache this model never fills
                raise ValueError("cache: expected a DeciLMCache returned by this model")
            cache = None
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if cache is None and use_cache and labels is None:
            cache = DeciLMCache(self.config.num_hidden_layers)
        h = self.model(input_ids, attention_mask, position_ids, cache, inputs_embeds)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = F.linear(h, self.lm_head.weight)
        loss = None
        if labels is not None:  # next-token loss; -100 marks ignored positions
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten().to(logits.device),
                                   ignore_index=-100)  # fmt: skip
        out = CausalLMOutputWithPast(loss=loss, logits=logits, **{_CACHE_FIELD: cache})
        return out.to_tuple() if return_dict is False else out
