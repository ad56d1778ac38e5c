# SPDX-License-Identifier: Apache-2.0
"""Write and read Hugging Face folders that carry their own modeling code (heterogeneous sub-models).

A native `HybridLM` whose config stock transformers cannot express (per-layer widths, a Llama-family stack with
single blocks dropped, ...) is written as:

    config.json            ElasticHybridConfig (model_type "nemotron_elastic_hybrid") with `auto_map`
    model.safetensors      native tensors under NemotronH-style keys: "backbone." + native key, "lm_head.weight"
                           (left out when tied: transformers re-ties it from `_tied_weights_keys`)
    *_elastic_hybrid.py    the modeling code (copied from this package: TEMPLATE_FILES)
    generation_config.json when the config has token ids; tokenizer files are added by the caller

so that `AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)` computes the native function,
scaled RoPE included (`rope_parameters` is written verbatim and read back unchanged).
`read_remote_code` reads such a folder back as (ModelConfig, native state dict) without running its code.
"""

from __future__ import annotations

import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from ...config.model import ModelConfig
from ..keymap import check_state_dict, native_shapes
from ..stream import write_tensors

MODEL_TYPE = "nemotron_elastic_hybrid"
TEMPLATE_DIR = Path(__file__).resolve().parent
TEMPLATE_FILES = (
    "configuration_elastic_hybrid.py",
    "mixers_elastic_hybrid.py",
    "modeling_elastic_hybrid.py",
    "ssd_elastic_hybrid.py",
)
AUTO_MAP = {
    "AutoConfig": "configuration_elastic_hybrid.ElasticHybridConfig",
    "AutoModel": "modeling_elastic_hybrid.ElasticHybridModel",
    "AutoModelForCausalLM": "modeling_elastic_hybrid.ElasticHybridForCausalLM",
}
PREFIX = "backbone."
# ModelConfig field -> ElasticHybridConfig field, where the names differ (the per-layer widths are lists there).
_RENAMED = {
    "num_attention_heads": "attention_heads_per_layer",
    "intermediate_size": "mlp_sizes_per_layer",
    "mamba_num_heads": "mamba_heads_per_layer",
}
_TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")
# Every ModelConfig field the template code implements (or that does not change the function: init ranges).
# A field added to ModelConfig later exports only at its default (where it changes nothing) until it is
# implemented in the templates and listed here.
KNOWN_FIELDS = frozenset(
    {
        "family", "pattern", "vocab_size", "hidden_size", "tie_word_embeddings", "norm_eps",
        "num_attention_heads", "num_key_value_heads", "head_dim", "rope_theta", "rope_parameters",
        "attention_bias",
        "max_position_embeddings", "intermediate_size", "mlp_activation", "mlp_gated", "mlp_bias",
        "mamba_num_heads", "mamba_head_dim", "mamba_n_groups", "ssm_state_size", "conv_kernel", "use_conv_bias",
        "mamba_proj_bias", "chunk_size", "time_step_min", "time_step_max", "time_step_floor",
        "initializer_range", "rescale_prenorm_residual", *_TOKEN_IDS,
    }
)  # fmt: skip


def remote_config(config: ModelConfig) -> Any:
    """The `ElasticHybridConfig` (with `auto_map` and `architectures`) for a native config."""
    from .configuration_elastic_hybrid import ElasticHybridConfig  # deferred: imports transformers
    unknown = [f.name for f in fields(config)
               if f.name not in KNOWN_FIELDS and getattr(config, f.name) != f.default]
    if unknown:  # the modeling code would ignore it and compute another function
        raise ValueError(
            f"remote-code export: the exported modeling code does not implement config field {unknown[0]}"
        )
    values = {f.name: getattr(config, f.name) for f in fields(config) if f.name in KNOWN_FIELDS}
    values["attention_heads_per_layer"] = config.attention_heads_per_layer()
    values["mlp_sizes_per_layer"] = config.mlp_sizes_per_layer()
    values["mamba_heads_per_layer"] = config.mamba_heads_per_layer()
    for name in _RENAMED:
        del values[name]
    return ElasticHybridConfig(**values, architectures=["ElasticHybridForCausalLM"], auto_map=dict(AUTO_MAP))


def remote_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors under the exported keys (CPU, contiguous; a tied head stored once)."""
    state = model.state_dict()
    return {
        (key if key == "lm_head.weight" else PREFIX + key): state[key].detach().to("cpu").contiguous()
        for key in native_shapes(model.config)
    }


def write_remote_code(model: torch.nn.Module, folder: Path) -> None:
    """Write config.json, model.safetensors, generation_config.json and the modeling code into `folder`.

    Args:
        model: a native HybridLM (any config the native model supports).
        folder: an existing, empty folder (the caller renames it into place when complete).
    """
    from transformers import GenerationConfig

    config = remote_config(model.config)
    tensors = remote_state_dict(model)
    config.dtype = tensors[PREFIX + "embeddings.weight"].dtype
    config.save_pretrained(str(folder))
    write_tensors(folder / "model.safetensors", tensors, {"format": "pt"})  # streamed, one tensor at a time
    if any(getattr(model.config, name) is not None for name in _TOKEN_IDS):
        GenerationConfig.from_model_config(config).save_pretrained(str(folder))
    for name in TEMPLATE_FILES:
        shutil.copyfile(TEMPLATE_DIR / name, folder / name)


def _collapse(values: list[int], placeholder: int) -> int | list[int]:
    """Per-layer widths as ModelConfig keeps them: one int when uniform (a placeholder when there are none)."""
    if not values:
        return placeholder
    return values[0] if len(set(values)) == 1 else list(values)


def native_config_from_remote(raw: dict[str, Any], where: str) -> ModelConfig:
    """The ModelConfig of a remote-code config.json (already parsed), with one-line errors."""
    names = {f.name for f in fields(ModelConfig)}
    values = {k: v for k, v in raw.items() if k in names and k not in _RENAMED}
    try:
        kv, groups = int(raw["num_key_value_heads"]), int(raw["mamba_n_groups"])
        values["num_attention_heads"] = _collapse(raw["attention_heads_per_layer"], kv)
        values["intermediate_size"] = _collapse(raw["mlp_sizes_per_layer"], 1)
        values["mamba_num_heads"] = _collapse(raw["mamba_heads_per_layer"], groups)
        return ModelConfig(**values)
    except KeyError as e:
        raise ValueError(f"{where}: {MODEL_TYPE} config lacks {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: invalid {MODEL_TYPE} config ({' '.join(str(e).split())})") from None


def remote_to_native_state_dict(
    tensors: dict[str, torch.Tensor], config: ModelConfig, where: str
) -> dict[str, torch.Tensor]:
    """Rename exported tensors to native keys and check them against `config`."""
    native: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}
    unknown: list[str] = []
    for key, tensor in tensors.items():
        if key == "lm_head.weight":
            native_key = key
        elif key.startswith(PREFIX):
            native_key = key[len(PREFIX) :]
        else:
            unknown.append(key)
            continue
        native[native_key], names[native_key] = tensor, key
    if config.tie_word_embeddings:
        native.pop("lm_head.weight", None)  # transformers re-ties the head to the embeddings on load
    for key in native_shapes(config):
        names.setdefault(key, key if key == "lm_head.weight" else PREFIX + key)
    check_state_dict(native, config, where, names, unknown)
    return native
