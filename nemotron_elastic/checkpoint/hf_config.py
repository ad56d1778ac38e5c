# SPDX-License-Identifier: Apache-2.0
"""Native `ModelConfig` <-> transformers configs: NemotronH here, the Llama-layout families (Llama, Qwen2,
Qwen3, Mistral) in `hf_decoder.py`.

Tensor names and shapes are `keymap.py`. Official configs: transformers `models/nemotron_h` and
`models/llama` (5.24).
"""

from __future__ import annotations

from ..config.model import ModelConfig
from .hf_decoder import decoder_config_class, decoder_config_to_native, native_to_decoder_config
from .keymap import check_model_type


def _unsupported(where: str, what: str) -> ValueError:
    return ValueError(f"{where}: unsupported {what}")


def _first_id(value: object) -> int | None:
    """HF allows a list of EOS ids; the native config keeps one (the first)."""
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value else None
    return None if value is None else int(value)  # type: ignore[arg-type]


def hf_config_class(model_type: str) -> type:
    """The transformers config class of a supported model_type."""
    if model_type == "nemotron_h":
        from transformers import NemotronHConfig  # deferred: transformers' model registry is slow to import

        return NemotronHConfig
    return decoder_config_class(model_type)


def hf_config_to_native(hf_config, where: str = "config.json") -> ModelConfig:
    """Convert a transformers `NemotronHConfig` or Llama / Qwen2 / Qwen3 / Mistral config to a `ModelConfig`.

    Args:
        hf_config: the transformers config object (legacy fields already normalised by its class).
        where: file name used in error messages.

    Returns:
        The native config (homogeneous, `family` set to the HF model_type).

    Raises:
        ValueError: unsupported model_type or a feature the native model does not have (MoE blocks,
            a RoPE type other than default / linear / dynamic / yarn / longrope / llama3, activations other
            than relu2 / silu, a sliding window on some layers only).
    """
    family = check_model_type(hf_config.model_type, where)
    common = dict(
        vocab_size=hf_config.vocab_size,
        hidden_size=hf_config.hidden_size,
        tie_word_embeddings=bool(hf_config.tie_word_embeddings),
        num_attention_heads=hf_config.num_attention_heads,
        num_key_value_heads=hf_config.num_key_value_heads,
        max_position_embeddings=hf_config.max_position_embeddings,
        intermediate_size=hf_config.intermediate_size,
        mlp_bias=bool(getattr(hf_config, "mlp_bias", False)),
        initializer_range=hf_config.initializer_range,
        bos_token_id=_first_id(hf_config.bos_token_id),
        eos_token_id=_first_id(hf_config.eos_token_id),
        pad_token_id=_first_id(hf_config.pad_token_id),
    )
    if family != "nemotron_h":
        return decoder_config_to_native(hf_config, family, common, where)
    pattern = hf_config.hybrid_override_pattern
    if "E" in pattern:
        raise ValueError(
            f"{where}: hybrid_override_pattern {pattern!r}: NemotronH MoE blocks ('E') are not supported "
            "(only M, *, -)"
        )
    if hf_config.mlp_hidden_act not in ("relu2", "silu"):
        raise _unsupported(where, f"mlp_hidden_act {hf_config.mlp_hidden_act!r} (supported: 'relu2', 'silu')")
    if hf_config.mamba_hidden_act != "silu":
        raise _unsupported(where, f"mamba_hidden_act {hf_config.mamba_hidden_act!r} (must be 'silu')")
    return ModelConfig(
        family="nemotron_h",
        pattern=pattern,
        norm_eps=hf_config.layer_norm_epsilon,
        head_dim=hf_config.head_dim,
        rope_theta=None,  # NemotronH attention has no positional encoding
        attention_bias=False,  # HF NemotronH attention is built without biases whatever attention_bias says
        mlp_activation=hf_config.mlp_hidden_act,
        mlp_gated=False,
        mamba_num_heads=hf_config.mamba_num_heads,
        mamba_head_dim=hf_config.mamba_head_dim,
        mamba_n_groups=hf_config.n_groups,
        ssm_state_size=hf_config.ssm_state_size,
        conv_kernel=hf_config.conv_kernel,
        use_conv_bias=bool(hf_config.use_conv_bias),
        mamba_proj_bias=bool(hf_config.use_bias),  # the HF mixer reads use_bias, not mamba_proj_bias
        chunk_size=hf_config.chunk_size,
        time_step_min=hf_config.time_step_min,
        time_step_max=hf_config.time_step_max,
        time_step_floor=hf_config.time_step_floor,
        rescale_prenorm_residual=bool(hf_config.rescale_prenorm_residual),
        **common,
    )


def _width(per_layer: list[int], value: int | list[int], fallback: int) -> int:
    """The single width of a homogeneous block type (or a placeholder when the pattern has none)."""
    if per_layer:
        return per_layer[0]
    return value if isinstance(value, int) else fallback


def native_to_hf_config(config: ModelConfig):
    """Build the stock transformers config (`NemotronHConfig` or `LlamaConfig`) for a homogeneous `config`.

    Raises:
        ValueError: a heterogeneous config, or a feature the target HF class cannot express.
    """
    from transformers import NemotronHConfig

    if not config.is_homogeneous:
        raise ValueError(
            "save_hf: heterogeneous (per-layer) widths cannot be exported to a stock HF config yet"
        )
    # One width per block type; a type absent from the pattern still needs a valid HF value.
    heads = _width(config.attention_heads_per_layer(), config.num_attention_heads, config.num_key_value_heads)
    mlp = _width(config.mlp_sizes_per_layer(), config.intermediate_size, 1)
    mamba = _width(config.mamba_heads_per_layer(), config.mamba_num_heads, config.mamba_n_groups)
    ids = dict(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    common = dict(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        tie_word_embeddings=config.tie_word_embeddings,
        num_attention_heads=heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        max_position_embeddings=config.max_position_embeddings,
        intermediate_size=mlp,
        mlp_bias=config.mlp_bias,
        initializer_range=config.initializer_range,
        **ids,
    )
    if config.family != "nemotron_h":
        return native_to_decoder_config(config, common, heads)
    if config.rope_theta is not None or config.attention_bias or config.mlp_gated or config.o_proj_bias:
        raise ValueError(
            "save_hf: NemotronH export needs attention without RoPE or biases and a non-gated MLP"
        )
    if config.attention_qk_norm or config.sliding_window is not None:
        raise ValueError("save_hf: NemotronH export needs attention without q/k norms or a sliding window")
    return NemotronHConfig(
        hybrid_override_pattern=config.pattern,  # NemotronHConfig turns it into layers_block_type
        mlp_hidden_act=config.mlp_activation,
        mamba_num_heads=mamba,
        mamba_head_dim=config.mamba_head_dim,
        n_groups=config.mamba_n_groups,
        ssm_state_size=config.ssm_state_size,
        conv_kernel=config.conv_kernel,
        use_conv_bias=config.use_conv_bias,
        use_bias=config.mamba_proj_bias,
        mamba_proj_bias=config.mamba_proj_bias,
        chunk_size=config.chunk_size,
        time_step_min=config.time_step_min,
        time_step_max=config.time_step_max,
        time_step_floor=config.time_step_floor,
        layer_norm_epsilon=config.norm_eps,
        rescale_prenorm_residual=config.rescale_prenorm_residual,
        architectures=["NemotronHForCausalLM"],
        **common,
    )
