# SPDX-License-Identifier: Apache-2.0
"""Native `ModelConfig` <-> transformers `NemotronHConfig` / `LlamaConfig`, one place per family.

Tensor names and shapes are `keymap.py`. Official configs: transformers `models/nemotron_h` and
`models/llama` (5.24).
"""

from __future__ import annotations

from ..config.model import ModelConfig
from .keymap import check_model_type


def _unsupported(where: str, what: str) -> ValueError:
    return ValueError(f"{where}: unsupported {what}")


def _first_id(value: object) -> int | None:
    """HF allows a list of EOS ids; the native config keeps one (the first)."""
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value else None
    return None if value is None else int(value)  # type: ignore[arg-type]


def hf_config_to_native(hf_config, where: str = "config.json") -> ModelConfig:
    """Convert a transformers `NemotronHConfig` or `LlamaConfig` to a `ModelConfig`.

    Args:
        hf_config: the transformers config object (legacy fields already normalised by its class).
        where: file name used in error messages.

    Returns:
        The native config (homogeneous, `family` set to the HF model_type).

    Raises:
        ValueError: unsupported model_type or a feature the native model does not have (MoE blocks,
            RoPE scaling, activations other than relu2 / silu).
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
        mlp_bias=bool(hf_config.mlp_bias),
        initializer_range=hf_config.initializer_range,
        bos_token_id=_first_id(hf_config.bos_token_id),
        eos_token_id=_first_id(hf_config.eos_token_id),
        pad_token_id=_first_id(hf_config.pad_token_id),
    )
    if family == "llama":
        rope = dict(getattr(hf_config, "rope_parameters", None) or {})
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise _unsupported(where, f"rope type {rope_type!r} (only 'default' RoPE is supported)")
        if hf_config.hidden_act != "silu":
            raise _unsupported(where, f"hidden_act {hf_config.hidden_act!r} (Llama import supports 'silu')")
        if getattr(hf_config, "pretraining_tp", 1) not in (1, None):
            raise _unsupported(where, f"pretraining_tp {hf_config.pretraining_tp} (must be 1)")
        head_dim = (
            getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
        )
        return ModelConfig(
            family="llama",
            pattern="*-" * hf_config.num_hidden_layers,
            norm_eps=hf_config.rms_norm_eps,
            head_dim=head_dim,
            rope_theta=float(rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))),
            attention_bias=bool(hf_config.attention_bias),
            mlp_activation="silu",
            mlp_gated=True,
            **common,
        )
    pattern = hf_config.hybrid_override_pattern
    if "E" in pattern:
        raise _unsupported(
            where, f"NemotronH MoE blocks ('E' in pattern {pattern!r}); only M, *, - are supported"
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
    from transformers import LlamaConfig, NemotronHConfig

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
    if config.family == "llama":
        n = config.num_layers // 2
        if config.pattern != "*-" * n:
            raise ValueError(f"save_hf: Llama export needs pattern '*-' * n_layers, got {config.pattern!r}")
        if config.rope_theta is None or not config.mlp_gated or config.mlp_activation != "silu":
            raise ValueError("save_hf: Llama export needs RoPE (rope_theta) and a gated SiLU MLP")
        if config.hidden_size % heads:
            # LlamaConfig rejects this even with an explicit head_dim.
            raise ValueError(
                f"save_hf: LlamaConfig needs hidden_size ({config.hidden_size}) divisible by heads ({heads})"
            )
        return LlamaConfig(
            num_hidden_layers=n,
            hidden_act="silu",
            rms_norm_eps=config.norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
            attention_bias=config.attention_bias,
            architectures=["LlamaForCausalLM"],
            **common,
        )
    if config.rope_theta is not None or config.attention_bias or config.mlp_gated:
        raise ValueError(
            "save_hf: NemotronH export needs attention without RoPE or biases and a non-gated MLP"
        )
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
