# SPDX-License-Identifier: Apache-2.0
"""Native `ModelConfig` <-> transformers configs of the Llama-layout families (Llama, Qwen2, Qwen3, Mistral).

All four are the native `*-` stack with RoPE and a gated SiLU MLP; they differ in attention:

| family  | q/k/v bias     | o_proj bias    | q/k norm | sliding window                    | MLP bias |
|---------|----------------|----------------|----------|-----------------------------------|----------|
| llama   | attention_bias | attention_bias | -        | -                                 | mlp_bias |
| qwen2   | always         | never          | -        | on every layer, or refused        | never    |
| qwen3   | attention_bias | attention_bias | per head | on every layer, or refused        | never    |
| mistral | never          | never          | -        | `sliding_window` (null: none)     | never    |

RoPE: `rope_parameters` as transformers has them after reading config.json (the legacy `rope_scaling` key is
folded in by the config class). Plain RoPE becomes `rope_theta` alone; a scaled type keeps the whole dict,
which export writes back unchanged. Per-layer-type RoPE dicts and partial rotation are refused.

The dispatch and NemotronH are `hf_config.py`. Official configs: transformers
`models/{llama,qwen2,qwen3,mistral}/configuration_*.py` (5.24).
"""

from __future__ import annotations

import copy
from typing import Any

from ..config.model import ROPE_TYPES, ModelConfig

DECODER_FAMILIES = ("llama", "qwen2", "qwen3", "mistral")
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "mistral": "MistralForCausalLM",
}


def decoder_config_class(family: str) -> type:
    """The transformers config class of a Llama-layout family."""
    import transformers  # deferred: the config classes load transformers' model registry

    return getattr(transformers, {"llama": "LlamaConfig", "qwen2": "Qwen2Config", "qwen3": "Qwen3Config",
                                  "mistral": "MistralConfig"}[family])


def rope_from_hf(hf_config, where: str) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, rope_parameters or None for plain RoPE) of a transformers config."""
    params = dict(getattr(hf_config, "rope_parameters", None) or {})
    if any(isinstance(v, dict) for v in params.values()):
        raise ValueError(f"{where}: rope_parameters per layer type ({', '.join(params)}) is not supported")
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        supported = ", ".join(ROPE_TYPES)
        raise ValueError(
            f"{where}: unsupported rope_parameters.rope_type {rope_type!r} (supported: {supported})"
        )
    partial = params.get("partial_rotary_factor", 1.0)
    if partial not in (None, 1, 1.0):
        raise ValueError(
            f"{where}: rope_parameters.partial_rotary_factor {partial!r} is not supported (only 1.0)"
        )
    theta = float(params.get("rope_theta") or getattr(hf_config, "rope_theta", None) or 10000.0)
    return theta, (None if rope_type == "default" else copy.deepcopy(params))


def _window(hf_config, family: str, where: str) -> int | None:
    """The sliding window of every layer, or None; refused when only some layers have one (Qwen)."""
    window = getattr(hf_config, "sliding_window", None)
    if window is None or family == "mistral":  # Mistral windows every layer
        return window
    kinds = list(getattr(hf_config, "layer_types", None) or [])
    sliding = sum(kind == "sliding_attention" for kind in kinds)
    if sliding == 0:
        return None
    layers = hf_config.num_hidden_layers
    if sliding != len(kinds) or len(kinds) != layers:
        raise ValueError(
            f"{where}: layer_types has sliding_attention on {sliding} of {layers} layers (max_window_layers "
            f"{getattr(hf_config, 'max_window_layers', None)}); a window on some layers only is not supported"
        )
    return int(window)


def decoder_config_to_native(hf_config, family: str, common: dict[str, Any], where: str) -> ModelConfig:
    """A Llama-layout transformers config -> ModelConfig. `common`: the fields every family shares."""
    if hf_config.hidden_act != "silu":
        raise ValueError(f"{where}: unsupported hidden_act {hf_config.hidden_act!r} (supported: 'silu')")
    if getattr(hf_config, "pretraining_tp", 1) not in (1, None):
        raise ValueError(f"{where}: unsupported pretraining_tp {hf_config.pretraining_tp} (must be 1)")
    theta, rope = rope_from_hf(hf_config, where)
    extras = {"attention_bias": bool(getattr(hf_config, "attention_bias", False)), "mlp_bias": False}
    if family == "llama":
        extras["mlp_bias"] = bool(hf_config.mlp_bias)
    elif family == "qwen2":  # Qwen2Attention: q/k/v with biases, o_proj without, whatever the config says
        extras.update(attention_bias=True, attention_out_bias=False)
    elif family == "qwen3":
        extras["attention_qk_norm"] = True
    else:  # MistralAttention has no biases
        extras["attention_bias"] = False
    if family != "llama":
        extras["sliding_window"] = _window(hf_config, family, where)
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    return ModelConfig(
        **{**common, **extras},
        family=family,
        pattern="*-" * hf_config.num_hidden_layers,
        norm_eps=hf_config.rms_norm_eps,
        head_dim=head_dim,
        rope_theta=theta,
        rope_parameters=rope,
        mlp_activation="silu",
        mlp_gated=True,
    )


def _check_exportable(config: ModelConfig, heads: int) -> None:
    """One line naming the first feature the family's stock class cannot express."""
    family, name = config.family, ARCHITECTURES[config.family].removesuffix("ForCausalLM")
    n = config.num_layers // 2
    if config.pattern != "*-" * n:
        raise ValueError(f"save_hf: {name} export needs pattern '*-' * n_layers, got {config.pattern!r}")
    if config.rope_theta is None or not config.mlp_gated or config.mlp_activation != "silu":
        raise ValueError(f"save_hf: {name} export needs RoPE (rope_theta) and a gated SiLU MLP")
    # (field, what the model has, what the stock class builds), attention first
    qkv_bias, o_bias = ("attention_bias", config.attention_bias), ("attention_out_bias", config.o_proj_bias)
    qk_norm, mlp_bias = ("attention_qk_norm", config.attention_qk_norm), ("mlp_bias", config.mlp_bias)
    window = ("sliding_window", config.sliding_window)
    checks = {
        "llama": [(*o_bias, config.attention_bias), (*qk_norm, False), (*window, None)],
        "qwen2": [(*qkv_bias, True), (*o_bias, False), (*qk_norm, False), (*mlp_bias, False)],
        "qwen3": [(*o_bias, config.attention_bias), (*qk_norm, True), (*mlp_bias, False)],
        "mistral": [(*qkv_bias, False), (*o_bias, False), (*qk_norm, False), (*mlp_bias, False)],
    }[family]
    for field, found, want in checks:
        if found != want:
            raise ValueError(f"save_hf: the stock {name} class cannot express {field}={found!r}")
    if family == "llama" and config.hidden_size % heads:
        # LlamaConfig rejects this even with an explicit head_dim.
        raise ValueError(
            f"save_hf: LlamaConfig needs hidden_size ({config.hidden_size}) divisible by heads ({heads})"
        )


def native_to_decoder_config(config: ModelConfig, common: dict[str, Any], heads: int):
    """The stock transformers config of a homogeneous Llama-layout `config`. `common`: shared HF fields,
    `heads`: the query heads of every layer.

    Raises:
        ValueError: one line naming a feature the family's class cannot express.
    """
    _check_exportable(config, heads)
    family = config.family
    rope = copy.deepcopy(config.rope_parameters) or {"rope_type": "default", "rope_theta": config.rope_theta}
    kwargs: dict[str, Any] = dict(common)
    if family == "llama":
        kwargs["attention_bias"] = config.attention_bias
    else:
        kwargs.pop("mlp_bias")  # not a field of these classes: it would only add a key to config.json
    if family == "qwen3":
        kwargs["attention_bias"] = config.attention_bias
    if family in ("qwen2", "qwen3") and config.sliding_window is not None:  # a window on every layer
        kwargs.update(use_sliding_window=True, sliding_window=config.sliding_window, max_window_layers=0)
    if family == "mistral":
        kwargs["sliding_window"] = config.sliding_window
    return decoder_config_class(family)(
        num_hidden_layers=config.num_layers // 2,
        hidden_act="silu",
        rms_norm_eps=config.norm_eps,
        rope_parameters=rope,
        architectures=[ARCHITECTURES[family]],
        **kwargs,
    )
