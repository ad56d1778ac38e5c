# SPDX-License-Identifier: Apache-2.0
"""HybridLM: the native hybrid Mamba2 / attention / MLP language model.

    embeddings -> [block_0 ... block_{L-1}] -> norm_f -> lm_head
    block_i(h) = h + mixer_i(norm_i(h)),  mixer_i in {Mamba2 'M', Attention '*', MLP '-'}

The module tree and parameter names mirror transformers' NemotronH (`embeddings`, `layers.i.norm`,
`layers.i.mixer.*`, `norm_f`, `lm_head`), so HF import/export are key maps (see `checkpoint/keymap.py`).
A Llama-family model is the same stack with pattern "*-*-..." (attention block = input_layernorm +
self_attn, MLP block = post_attention_layernorm + mlp), RoPE and a gated SiLU MLP; Qwen2 / Qwen3 / Mistral
are that stack with their attention extras (see `attention.py`), RoPE of any type in `rope.py`.

Build on the meta device and initialise once:

    with torch.device("meta"):
        model = HybridLM(config)
    model.to_empty(device="cpu")
    model.init_weights()          # or load_state_dict(..., assign=True) then tie_weights()
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config.model import ModelConfig
from ..config.spec import SubnetSpec
from .attention import Attention
from .batch_cache import BatchCache, MambaRows
from .batcher import generate
from .decode import AttentionState, InferenceCache, MambaState
from .init import init_weights
from .kernels import Kernels, select_kernels
from .layout import Linear, linear, scale, sub_linear
from .mamba2 import Mamba2Mixer
from .masks import ElasticMasks, LayerMasks
from .mlp import MLP
from .norm import RMSNorm
from .rope import Rope, RotaryEmbedding
from .tiles import tile_layer, untile, untile_layer


def build_mixer(config: ModelConfig, layer: int) -> nn.Module:
    """The mixer of block `layer`, with that layer's (possibly per-layer) width."""
    char, width = config.pattern[layer], config.layer_sizes(layer)
    d = config.hidden_size
    if char == "-":
        return MLP(d, width, config.mlp_activation, config.mlp_gated, config.mlp_bias)
    if char == "*":
        return Attention(
            d,
            width,
            config.num_key_value_heads,
            config.head_dim,
            config.attention_bias,
            out_bias=config.o_proj_bias,
            qk_norm_eps=config.norm_eps if config.attention_qk_norm else None,
            window=config.sliding_window,
        )
    return Mamba2Mixer(
        d,
        width,
        config.mamba_head_dim,
        config.mamba_n_groups,
        config.ssm_state_size,
        config.conv_kernel,
        config.chunk_size,
        config.use_conv_bias,
        config.mamba_proj_bias,
        config.norm_eps,
        config.time_step_min,
    )


class Block(nn.Module):
    """Pre-norm residual block around one mixer. `block_type` is the pattern char."""

    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.block_type = config.pattern[layer]
        self.norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.mixer = build_mixer(config, layer)

    def forward(
        self,
        h: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        state: AttentionState | MambaState | None = None,
        masks: ElasticMasks | None = None,
        layer: LayerMasks | None = None,
    ) -> tuple[torch.Tensor, AttentionState | MambaState | None]:
        """h: (B, T, d) -> (B, T, d), and the mixer's updated decoding state (None for MLP / no cache).

        With `masks` (a sub-model) the block runs on the first d = masks.hidden.size channels: the pre-norm
        normalises over the active (weighted) channels, the mixer input and output are multiplied by the
        hidden factor, the mixer runs at `layer.width`, and a soft depth gate scales the mixer's output.
        """
        if masks is None:
            x = self.norm(h)
            if self.block_type == "-":
                return h + self.mixer(x), None
            if self.block_type == "*":
                y, state = self.mixer(x, rope=rope, state=state)
            else:
                y, state = self.mixer(x, state=state)
            return h + y, state
        hidden = masks.hidden
        x = scale(self.norm(h, hidden.weights), hidden.factor())
        if self.block_type == "-":
            y = self.mixer(x, width=layer.width)
        elif self.block_type == "*":
            y, state = self.mixer(x, rope=rope, state=state, width=layer.width)
        else:
            y, state = self.mixer(x, state=state, width=layer.width, head_dim=masks.mamba_head_dim)
        y = scale(y, hidden.factor())
        if layer.gate is not None:
            y = y * layer.gate.to(y.dtype)
        return h + y, state


class HybridLM(nn.Module):
    """The native model. `forward(input_ids)` returns logits (B, T, V)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_layers))
        self.norm_f = RMSNorm(config.hidden_size, config.norm_eps)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        # RoPE tables come from the config alone (no buffers): nothing to redo after meta construction
        self.rotary = None if config.rope_theta is None else RotaryEmbedding(config)
        self.tie_weights()
        self.kernels_chosen = False  # set_kernels() not called yet (a first CUDA forward chooses: forward)

    def tie_weights(self) -> None:
        """Share the LM head with the embedding table when the config says so.

        Needed again after `to_empty()` or `load_state_dict(assign=True)`, which replace parameters one by one.
        """
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.embeddings.weight

    def set_kernels(self, kernels: Kernels) -> None:
        """Run every Mamba2 mixer's SSD scan and causal conv through `kernels` (model/kernels.py). Until this
        is called, the pure-PyTorch ones run, and a first forward on CUDA calls it with the `auto` choice."""
        self.kernels_chosen = True
        for block in self.layers:
            if isinstance(block.mixer, Mamba2Mixer):
                block.mixer.kernels = kernels

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Initialise every tensor (the one place weights are initialised: model/init.py's table)."""
        init_weights(self, generator)

    def new_cache(self) -> InferenceCache:
        """An empty decoding cache for `forward(..., cache=)` / `generate`."""
        return InferenceCache.for_layers(len(self.layers))

    def _empty_state(
        self, block: Block, batch: int, like: torch.Tensor, masks: ElasticMasks | None, layer: LayerMasks | None
    ) -> AttentionState | MambaState | None:
        mixer = block.mixer
        if isinstance(mixer, Mamba2Mixer):
            width = None if layer is None else layer.width
            head_dim = None if masks is None else masks.mamba_head_dim
            return mixer.empty_state(batch, like.dtype, like.device, width, head_dim)
        if isinstance(mixer, Attention):
            return mixer.empty_state(batch, like)
        return None

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: InferenceCache | None = None,
        last_only: bool = False,
        subnet: SubnetSpec | ElasticMasks | None = None,
        return_hidden: bool = False,
        checkpoint_every: int = 0,
        counts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids: (B, T) long -> logits (B, T, V) (or (B, 1, V) with last_only).

        return_hidden: return the LM head's input (B, T, d) instead of the logits, for losses that apply
        the head chunk by chunk (a 131k vocabulary at long context); the head is `head_weight(subnet)`.

        subnet: run a sub-model inside this parent: a SubnetSpec (sliced: compute shrinks with the spec) or
        ElasticMasks (sliced, masked or soft; differentiable in their weights / scales / gates). None is the
        parent, with no overhead.
        With `cache`, the tokens continue the sequence the cache has seen and the cache is updated in place;
        the result equals the corresponding positions of one full forward pass (use the same `subnet` for
        every call on one cache).
        A `BatchCache` (model/batch_cache.py): each row continues its own sequence, `counts` (B,) of its T
        right-padded tokens being real (default all); last_only takes each row's last real token. Each row
        equals that row run alone. A ragged step (rows of different counts: a prompt chunk next to decoding
        rows) runs its token-wise layers on the real tokens only (`RowStep.packed`, model/kv_store.py), so
        the padding costs no weight pass; masks that differ per row (`ElasticMasks.per_row`) follow the
        tokens (`ElasticMasks.take_rows`).

        checkpoint_every: activation checkpointing for training: when k > 0, parent blocks 0, k, 2k, ... keep
        only their input for backward and run again during it (k = 1: every block). Same values and
        gradients; less activation memory for one more forward of those blocks. Ignored without grad or
        with a cache.
        """
        if input_ids.is_cuda and not self.kernels_chosen:
            # A model on CUDA that no one configured (generate, eval, serve, score) takes the fused kernels
            # when they load and match the reference, else warns once: model/kernels.py, `auto`.
            self.set_kernels(select_kernels("auto", input_ids.device))
        masks = self._masks(subnet)
        recompute = checkpoint_every > 0 and cache is None and torch.is_grad_enabled()
        bsz, t = input_ids.shape
        step = None
        if isinstance(cache, BatchCache):
            step = cache.begin(input_ids.new_full((bsz,), t) if counts is None else counts, t, counts is not None)
        elif counts is not None:
            raise ValueError("counts: per-row token counts need a BatchCache")
        start = cache.seen if cache is not None and step is None else 0
        if masks is None:
            h = self.embeddings(input_ids)  # (B, T, D)
        else:  # the sub-model's embedding table is the first d columns; inactive channels stay zero
            h = scale(F.embedding(input_ids, self.embeddings.weight[:, : masks.hidden.size]), masks.hidden.factor())
        if step is not None:  # each row at its own positions: (B, 1, T, hd)
            rope = None if self.rotary is None else self.rotary.cos_sin_rows(step.positions, step.ends, h.dtype)
        else:
            rope = self.rope(start, t, h)
        layer_masks = masks  # what the blocks see: per token in a packed step
        if step is not None and step.packed:  # the residual stream holds the real tokens only: (N, 1, d)
            h = step.pack(h)
            if masks is not None and masks.is_per_row:
                layer_masks = masks.take_rows(step.flat // step.width)
        for i, block in enumerate(self.layers):
            layer = None if layer_masks is None else layer_masks.layers[i]
            if masks is not None and layer is None:  # a dropped layer: the residual passes through
                continue
            state = None
            if step is not None:
                state = cache.rows_state(i, block.block_type, step)
            elif cache is not None:
                state = cache.layers[i]
                if state is None:
                    state = self._empty_state(block, bsz, h, masks, layer)
            if recompute and i % checkpoint_every == 0:
                h, state = checkpoint(block, h, rope, state, layer_masks, layer, use_reentrant=False)
            else:
                h, state = block(h, rope, state, layer_masks, layer)
            if isinstance(state, MambaRows):
                cache.layers[i] = state.state
            elif cache is not None and step is None:
                cache.layers[i] = state
        if step is not None:
            cache.advance(step)
        elif cache is not None:
            cache.seen += t
        if last_only and step is not None and step.packed:  # each row's last real token in the pack
            h = h[(step.counts.cumsum(0) - 1).clamp(min=0)]  # (B, 1, d)
        elif last_only and step is not None:  # each row's last real token
            last = (step.counts - 1).clamp(min=0)
            h = h[torch.arange(bsz, device=h.device), last][:, None]
        elif step is not None and step.packed:
            h = step.unpack(h)  # (B, T, d), zeros at the padded slots
        elif last_only:
            h = h[:, -1:]
        if masks is None:
            h = self.norm_f(h)
        else:
            h = scale(self.norm_f(h, masks.hidden.weights), masks.hidden.factor())
        if return_hidden:
            return h
        if self.lm_head.tiles is not None:  # serving's tiled head: a sub-model reads its columns only
            return sub_linear(h, self.lm_head, self.config.vocab_size, h.shape[-1])
        return linear(h, self.head_weight(masks))

    def rope(self, start: int, length: int, like: torch.Tensor) -> Rope | None:
        """RoPE cos, sin (T, hd) for positions start .. start + length - 1 of a sequence that has
        start + length positions so far, in `like`'s dtype and device; None for a model without RoPE."""
        return None if self.rotary is None else self.rotary.cos_sin(start, length, like.device, like.dtype)

    def new_batch_cache(self, rows: int = 0, kind: str = "padded", pool=None) -> BatchCache:
        """An empty BatchCache of `rows` sequences for `forward(..., cache=, counts=)` (see batch_cache.py)."""
        return BatchCache.empty_rows(len(self.layers), rows, kind, pool, self.embeddings.weight.device)

    def head_weight(self, subnet: SubnetSpec | ElasticMasks | None = None) -> torch.Tensor:
        """The LM head weight a sub-model uses: (V, d), the first d columns."""
        masks = self._masks(subnet)
        head = self.lm_head
        weight = head.weight if head.tiles is None else untile(head.tiles, head.out_features)  # tiled: a copy
        return weight if masks is None else weight[:, : masks.hidden.size]

    def _masks(self, subnet: SubnetSpec | ElasticMasks | None) -> ElasticMasks | None:
        if subnet is None or isinstance(subnet, ElasticMasks):
            masks = subnet
        elif isinstance(subnet, SubnetSpec):
            if subnet.parent != self.config:
                raise ValueError("subnet: the spec was built for a different parent config")
            masks = ElasticMasks.from_spec(subnet)
        else:
            raise TypeError(f"subnet: expected SubnetSpec or ElasticMasks, got {type(subnet).__name__}")
        if masks is not None and len(masks.layers) != len(self.layers):
            raise ValueError(f"subnet: masks cover {len(masks.layers)} layers, the model has {len(self.layers)}")
        return masks

    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_token_id: int | list[int] | None = None,
        generator: torch.Generator | None = None,
        subnet: SubnetSpec | ElasticMasks | None = None,
    ) -> torch.Tensor:
        """Greedy (temperature 0) or sampled continuation with KV + SSM caches. (B, T) -> (B, T + n).

        subnet: generate with a sub-model of this parent (sliced forward, caches of the sub-model's size).
        """
        return generate(self, input_ids, max_new_tokens, temperature, top_k, top_p, eos_token_id, generator, subnet)

    def use_tiled_weights(self, tiled: bool = True) -> HybridLM:
        """Store every block's linear weights in tiles (model/tiles.py), or back row-major (`tiled=False`).

        For serving on a CPU: every budget then reads only its own part of the one weight copy. Same values
        up to float rounding; inference only (the state dict still gives the row-major weights; slicing
        needs them back). An untied LM head is tiled too; a tied one (also the embedding table) is not."""
        linears = [m for m in self.layers.modules() if isinstance(m, Linear)]
        if not self.config.tie_word_embeddings:  # a tied head is also the embedding table: it stays row-major
            linears.append(self.lm_head)
        for module in linears:
            (tile_layer if tiled else untile_layer)(module)
        # The rest in storages of their own: a loaded checkpoint's file mapping, which tiling has read through,
        # is then released instead of staying resident beside the tiles (measured: +0.4 GB RSS for 56M).
        tiles = {id(m.tiles) for m in linears if m.tiles is not None}
        with torch.no_grad():
            for p in self.parameters():
                if id(p) not in tiles:
                    p.data = p.data.clone()
        return self

    def num_parameters(self) -> int:
        """Distinct parameters (a tied LM head counts once)."""
        return sum(p.numel() for p in self.parameters())
