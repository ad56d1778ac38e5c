# SPDX-License-Identifier: Apache-2.0
"""The exported elastic hybrid model: a Mamba2 / attention / MLP stack whose layers may all differ in width.

Copied into heterogeneous Hugging Face exports written by nemotron-elastic (a sub-model cut from an elastic
parent with per-layer sizes) and loaded with

    AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)

Needs only torch and transformers. It computes the same function as nemotron-elastic's native `HybridLM`
(model/hybrid.py) for the same config and weights:

    embeddings -> [h = h + mixer_i(norm_i(h))] * L -> norm_f -> lm_head

Parameter names mirror transformers' NemotronH (`backbone.embeddings`, `backbone.layers.i.norm`,
`backbone.layers.i.mixer.*`, `backbone.norm_f`, `lm_head`). `generate` works with a decoding cache of its own
(KV for attention, conv + SSM state for Mamba2), or with `use_cache=False` (full recomputation).

RoPE (Llama-family stacks): default, or a scaled type (`rope_parameters`: linear, llama3, yarn, dynamic,
longrope) whose frequencies and attention factor come from transformers' public `ROPE_INIT_FUNCTIONS`
(`mixers_elastic_hybrid.RotaryEmbedding`); dynamic and longrope follow the length of the sequence so far
(cached + new tokens), as the native model does.

Official implementation: transformers `models/nemotron_h/modeling_nemotron_h.py` (5.24).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_elastic_hybrid import ElasticHybridConfig, NemotronHPuzzleConfig
from .mixers_elastic_hybrid import MLP, Attention, Mamba2Mixer, RotaryEmbedding
from .ssd_elastic_hybrid import rms_norm

# transformers 5.x names the output field `cache`; older releases called it `past_key_values`.
_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class ElasticHybridCache:
    """Decoding state of every block (None for MLP blocks) and the number of tokens seen.

    Not a transformers `Cache`: Mamba states cannot be cropped or rolled back, so this model is stateful.
    """

    is_compileable = False
    is_croppable = False

    def __init__(self, num_layers: int) -> None:
        self.layers: list[tuple | None] = [None] * num_layers
        self.seen = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Select batch rows (beam search)."""
        self.layers = [
            None if s is None else tuple(t.index_select(0, beam_idx.to(t.device)) for t in s)
            for s in self.layers
        ]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class ElasticHybridBlock(nn.Module):
    """Pre-norm residual block around one mixer of this layer's own width."""

    def __init__(self, config: ElasticHybridConfig, layer: int) -> None:
        super().__init__()
        self.block_type = config.pattern[layer]
        width = config.layer_width(layer)
        self.norm = RMSNorm(config.hidden_size, config.norm_eps)
        mixers = {"M": Mamba2Mixer, "*": Attention, "-": MLP}
        self.mixer = mixers[self.block_type](config, width)

    def forward(self, h, rope, state, pad_mask, key_mask):
        x = self.norm(h)
        if self.block_type == "-":
            return h + self.mixer(x), None
        if self.block_type == "*":
            y, state = self.mixer(x, rope, state, key_mask)
        else:
            y, state = self.mixer(x, state, pad_mask)
        return h + y, state


class ElasticHybridPreTrainedModel(PreTrainedModel):
    config_class = ElasticHybridConfig
    base_model_prefix = "backbone"
    _no_split_modules: ClassVar[list[str]] = ["ElasticHybridBlock"]
    _is_stateful = True
    supports_gradient_checkpointing = False

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model builds its own ElasticHybridCache on the first forward with use_cache

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialise a freshly built model; never touches a tensor loaded from a checkpoint."""

        def fresh(p: torch.Tensor | None) -> bool:
            return p is not None and not getattr(p, "_is_hf_initialized", False)

        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            if fresh(module.weight):
                module.weight.normal_(0.0, std)
            if isinstance(module, nn.Linear) and fresh(module.bias):
                module.bias.zero_()
        elif isinstance(module, nn.Conv1d):  # PyTorch's default bound for a depthwise conv
            bound = module.kernel_size[0] ** -0.5
            if fresh(module.weight):
                module.weight.uniform_(-bound, bound)
            if fresh(module.bias):
                module.bias.zero_()
        elif isinstance(module, RMSNorm) and fresh(module.weight):
            module.weight.fill_(1.0)
        elif isinstance(module, Mamba2Mixer):
            if fresh(module.A_log):
                module.A_log.copy_(torch.log(torch.arange(1, module.num_heads + 1, dtype=torch.float32)))
            if fresh(module.D):
                module.D.fill_(1.0)
            if fresh(module.dt_bias):  # softplus^-1 of dt log-uniform in [time_step_min, time_step_max]
                lo, hi = torch.tensor([self.config.time_step_min, self.config.time_step_max]).log()
                dt = torch.exp(torch.rand(module.num_heads) * (hi - lo) + lo).clamp(
                    min=self.config.time_step_floor
                )
                module.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            if fresh(module.norm.weight):
                module.norm.weight.fill_(1.0)


class ElasticHybridModel(ElasticHybridPreTrainedModel):
    """The backbone: embeddings, blocks, final norm. forward -> hidden states (B, T, D) and the cache."""

    def __init__(self, config: ElasticHybridConfig) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(ElasticHybridBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm_f = RMSNorm(config.hidden_size, config.norm_eps)
        self.rotary = None  # no positional encoding (NemotronH attention)
        if config.rope_theta is not None:
            rope = dict(getattr(config, "rope_parameters", None) or {"rope_type": "default"})
            rope.setdefault("rope_theta", config.rope_theta)
            self.rotary = RotaryEmbedding(rope, config.head_dim, config.max_position_embeddings)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None):
        h = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, D)
        bsz, t = h.shape[:2]
        start = 0 if cache is None else cache.seen
        key_mask = pad_mask = None
        if attention_mask is not None and attention_mask.dim() == 2 and not bool(attention_mask.all()):
            key_mask = attention_mask[:, -(start + t) :].bool()  # (B, S) over cached + new tokens
            pad_mask = key_mask[:, -t:] if t > 1 else None
        rope = None
        if self.rotary is not None:
            if position_ids is None:
                position_ids = torch.arange(start, start + t, device=h.device)
            # dynamic / longrope frequencies follow the sequence so far (cached + new), as the native model's
            rope = self.rotary(position_ids, start + t, h.dtype)
        for i, block in enumerate(self.layers):
            state = None
            if cache is not None:
                state = cache.layers[i]
                if state is None and block.block_type != "-":
                    state = block.mixer.empty_state(bsz, h)
            h, state = block(h, rope, state, pad_mask, key_mask)
            if cache is not None:
                cache.layers[i] = state
        if cache is not None:
            cache.seen += t
        return self.norm_f(h)


class ElasticHybridForCausalLM(ElasticHybridPreTrainedModel, GenerationMixin):
    """Backbone + LM head (tied to the embeddings when `tie_word_embeddings`)."""

    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "backbone.embeddings.weight"}

    def __init__(self, config: ElasticHybridConfig) -> None:
        super().__init__(config)
        self.backbone = ElasticHybridModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.backbone.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.backbone.embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: ElasticHybridCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
        """input_ids (B, T) -> CausalLMOutputWithPast(logits (B, T, V), loss with `labels`, cache).

        attention_mask: (B, S) with 0 at (left) padding, or None. With `use_cache` (default: config.use_cache)
        the returned cache continues the sequence on the next call (feed only the new tokens).
        """
        cache = kwargs.pop("past_key_values", cache)  # the pre-5.x name
        if cache is not None and not isinstance(cache, ElasticHybridCache):
            if cache.get_seq_length() != 0:  # a transformers Cache this model never fills
                raise ValueError("cache: expected an ElasticHybridCache returned by this model")
            cache = None
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if cache is None and use_cache and labels is None:
            cache = ElasticHybridCache(self.config.num_hidden_layers)
        h = self.backbone(input_ids, attention_mask, position_ids, cache, inputs_embeds)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = F.linear(h, self.lm_head.weight)
        loss = None
        if labels is not None:  # next-token loss; -100 marks ignored positions
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(),
                labels[:, 1:].flatten().to(logits.device),
                ignore_index=-100,
            )
        out = CausalLMOutputWithPast(loss=loss, logits=logits, **{_CACHE_FIELD: cache})
        return out.to_tuple() if return_dict is False else out


# --- the Puzzle format: the same model built from a NemotronHPuzzleConfig (widths from block_configs) ----------
class NemotronHPuzzleModel(ElasticHybridModel):
    """The backbone of a Puzzle-format export (model_type "nemotron_h_puzzle")."""

    config_class = NemotronHPuzzleConfig


class NemotronHPuzzleForCausalLM(ElasticHybridForCausalLM):
    """A Puzzle-format export: NemotronH names, per-layer MLP widths, the head stored explicitly."""

    config_class = NemotronHPuzzleConfig
