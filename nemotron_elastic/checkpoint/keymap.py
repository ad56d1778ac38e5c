# SPDX-License-Identifier: Apache-2.0
"""Native <-> Hugging Face tensor names and shapes, one place per family.

The native `HybridLM` mirrors transformers' NemotronH module tree, so the NemotronH map is a prefix:

    native                          NemotronH (as `save_pretrained` writes it; 5.24 renames it to `model.`)
    embeddings.weight               backbone.embeddings.weight
    layers.{i}.(norm|mixer).*       backbone.layers.{i}.(norm|mixer).*
    norm_f.weight                   backbone.norm_f.weight
    lm_head.weight                  lm_head.weight

A decoder layer i of Llama, Qwen2, Qwen3 and Mistral (one layout) is two native blocks, 2i (attention) and
2i+1 (MLP):

    embeddings.weight               model.embed_tokens.weight
    layers.{2i}.norm.weight         model.layers.{i}.input_layernorm.weight
    layers.{2i}.mixer.{q,k,v,o}_proj.* model.layers.{i}.self_attn.{q,k,v,o}_proj.*
    layers.{2i}.mixer.{q,k}_norm.weight model.layers.{i}.self_attn.{q,k}_norm.weight (Qwen3)
    layers.{2i+1}.norm.weight       model.layers.{i}.post_attention_layernorm.weight
    layers.{2i+1}.mixer.{gate,up,down}_proj.* model.layers.{i}.mlp.{gate,up,down}_proj.*
    norm_f.weight                   model.norm.weight
    lm_head.weight                  lm_head.weight (absent when tied)

`native_shapes(config)` is the expected shape of every native tensor; importers check files against it.
Config conversion is `hf_config.py`.

Official implementation: transformers `models/nemotron_h/modeling_nemotron_h.py`,
`models/{llama,qwen2,qwen3,mistral}/modeling_*.py` (5.24).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from ..config.model import FAMILIES, ModelConfig

SUPPORTED_MODEL_TYPES = FAMILIES
NEMOTRON_H_PREFIX = "backbone."  # what NemotronHForCausalLM.save_pretrained writes in transformers 5.24
NEMOTRON_H_IMPORT_PREFIXES = ("backbone.", "model.")  # checkpoints in the wild / transformers' own rename

# HF keys that carry no weights of the model (HF ignores them on load too): NemotronH multi-token prediction
# heads, and RoPE frequency buffers that old Llama checkpoints saved.
_ROPE_BUFFER = re.compile(r"\.rotary_emb\.inv_freq$")
IGNORED_HF_KEYS = {f: _ROPE_BUFFER for f in FAMILIES}
IGNORED_HF_KEYS["nemotron_h"] = re.compile(r"^mtp\.")

_LLAMA_GLOBAL = {
    "embeddings.weight": "model.embed_tokens.weight",
    "norm_f.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
}
_LLAMA_GLOBAL_INV = {v: k for k, v in _LLAMA_GLOBAL.items()}
_LLAMA_HF_LAYER = re.compile(
    r"^model\.layers\.(\d+)\.(input_layernorm\.weight|post_attention_layernorm\.weight"
    r"|self_attn\.[qkvo]_proj\.(?:weight|bias)|self_attn\.[qk]_norm\.weight"
    r"|mlp\.(?:gate|up|down)_proj\.(?:weight|bias))$"
)
_NATIVE_LAYER = re.compile(r"^layers\.(\d+)\.(?:norm\.weight|mixer\.(.+))$")


def check_model_type(model_type: object, where: str = "config.json") -> str:
    """Return `model_type` if supported, else raise one clear ValueError naming it."""
    if model_type not in SUPPORTED_MODEL_TYPES:
        supported = ", ".join(SUPPORTED_MODEL_TYPES)
        raise ValueError(f"{where}: unsupported model_type {model_type!r} (supported: {supported})")
    return model_type  # type: ignore[return-value]


# --- keys --------------------------------------------------------------------------------------------------


def to_hf_key(key: str, family: str) -> str:
    """Map a native state-dict key to the HF key of `family` ("nemotron_h", or a Llama-layout family)."""
    if family == "nemotron_h":
        return key if key == "lm_head.weight" else NEMOTRON_H_PREFIX + key
    if key in _LLAMA_GLOBAL:
        return _LLAMA_GLOBAL[key]
    match = _NATIVE_LAYER.match(key)
    if match is None:
        raise ValueError(f"native key {key!r} has no Llama equivalent")
    layer, is_mlp = divmod(int(match.group(1)), 2)  # block 2i: attention, block 2i+1: MLP
    mixer_rest = match.group(2)
    if mixer_rest is None:
        name = "post_attention_layernorm.weight" if is_mlp else "input_layernorm.weight"
    else:
        name = ("mlp." if is_mlp else "self_attn.") + mixer_rest
    return f"model.layers.{layer}.{name}"


def from_hf_key(key: str, family: str) -> str | None:
    """Map an HF key of `family` to the native key; None when the key is not part of the format."""
    if family == "nemotron_h":
        if key == "lm_head.weight":
            return key
        for prefix in NEMOTRON_H_IMPORT_PREFIXES:
            if key.startswith(prefix):
                return key[len(prefix) :]
        return None
    if key in _LLAMA_GLOBAL_INV:
        return _LLAMA_GLOBAL_INV[key]
    match = _LLAMA_HF_LAYER.match(key)
    if match is None:
        return None
    layer, name = int(match.group(1)), match.group(2)
    if name.startswith(("input_layernorm", "post_attention_layernorm")):
        block = 2 * layer + name.startswith("post")
        return f"layers.{block}.norm.weight"
    module, _, rest = name.partition(".")
    return f"layers.{2 * layer + (module == 'mlp')}.mixer.{rest}"


def native_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor a native checkpoint of `config` holds.

    A tied `lm_head.weight` is left out: it is `embeddings.weight` and stored once.

    Args:
        config: the model's architecture.

    Returns:
        Native key -> shape, in module order.
    """
    d, v = config.hidden_size, config.vocab_size
    shapes: dict[str, tuple[int, ...]] = {"embeddings.weight": (v, d)}
    for i, char in enumerate(config.pattern):
        width, p = config.layer_sizes(i), f"layers.{i}.mixer."
        shapes[f"layers.{i}.norm.weight"] = (d,)
        linears: list[tuple[str, int, int, bool]] = []  # (name, out, in, has_bias)
        if char == "-":
            if config.mlp_gated:
                linears.append(("gate_proj", width, d, config.mlp_bias))
            linears += [("up_proj", width, d, config.mlp_bias), ("down_proj", d, width, config.mlp_bias)]
        elif char == "*":
            q, kv = width * config.head_dim, config.num_key_value_heads * config.head_dim
            bias = config.attention_bias
            linears += [("q_proj", q, d, bias), ("k_proj", kv, d, bias), ("v_proj", kv, d, bias)]
            linears.append(("o_proj", d, q, config.o_proj_bias))
        else:
            inner = width * config.mamba_head_dim
            conv_dim = inner + 2 * config.mamba_n_groups * config.ssm_state_size
            linears.append(("in_proj", inner + conv_dim + width, d, config.mamba_proj_bias))
            shapes[p + "conv1d.weight"] = (conv_dim, 1, config.conv_kernel)
            if config.use_conv_bias:
                shapes[p + "conv1d.bias"] = (conv_dim,)
            for name in ("dt_bias", "A_log", "D"):
                shapes[p + name] = (width,)
            shapes[p + "norm.weight"] = (inner,)
            linears.append(("out_proj", d, inner, config.mamba_proj_bias))
        for name, n_out, n_in, bias in linears:
            shapes[f"{p}{name}.weight"] = (n_out, n_in)
            if bias:
                shapes[f"{p}{name}.bias"] = (n_out,)
        if char == "*" and config.attention_qk_norm:  # Qwen3: one RMSNorm weight over head_dim each
            shapes[p + "q_norm.weight"] = shapes[p + "k_norm.weight"] = (config.head_dim,)
    shapes["norm_f.weight"] = (d,)
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (v, d)
    return shapes


def key_list(keys: list[str], limit: int = 8) -> str:
    more = f" (and {len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_state_dict(
    state_dict: dict[str, torch.Tensor],
    config: ModelConfig,
    where: str,
    names: dict[str, str] | None = None,
    extra_unexpected: Sequence[str] = (),
) -> None:
    """Check that `state_dict` holds exactly the tensors `config` needs, with the right shapes.

    Args:
        state_dict: native key -> tensor.
        config: the architecture the tensors must fit.
        where: the file named in error messages.
        names: native key -> the key as written in the file (for HF files); identity when None.
        extra_unexpected: keys of the file that had no native equivalent at all.

    Raises:
        ValueError: one line naming the missing / unexpected keys, or the first key whose shape differs.
    """
    names = names or {}
    expected = native_shapes(config)
    missing = [names.get(k, k) for k in expected if k not in state_dict]
    unexpected = list(extra_unexpected) + [names.get(k, k) for k in state_dict if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys: {key_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {key_list(unexpected)}")
    if problems:
        raise ValueError(f"{where}: {'; '.join(problems)}")
    for key, shape in expected.items():
        found = tuple(state_dict[key].shape)
        if found != shape:
            raise ValueError(
                f"{where}: {names.get(key, key)} has shape {found}, expected {shape} from the config"
            )
