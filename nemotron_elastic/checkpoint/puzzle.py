# SPDX-License-Identifier: Apache-2.0
"""NemotronH sub-models in NVIDIA's heterogeneous "Puzzle" format (model_type "nemotron_h_puzzle").

A NemotronH sub-model whose only per-layer axis is the MLP width (depth is the pattern) is written as:

    config.json         architectures ["NemotronHPuzzleForCausalLM"], model_type "nemotron_h_puzzle", the stock
                        NemotronH keys (hidden_size, mamba_num_heads, n_groups, layer_norm_epsilon, ...), a
                        `block_configs` list with one entry per layer ({"block_type": "mamba" | "attention"} or
                        {"block_type": "mlp", "intermediate_size": F}), `hybrid_override_pattern`,
                        `layers_block_type`, and `auto_map` to the modeling code below
    model.safetensors   NemotronH's tensor names: "backbone." + native key, and "lm_head.weight" (always stored:
                        engines do not tie a NemotronH head)
    *_elastic_hybrid.py the transformers modeling code (remote_code/: NemotronHPuzzleConfig / ...ForCausalLM)

vLLM maps the architecture to its NemotronH model and reads each MLP block's width through the config's
`get_nemotron_h_config_for_layer` (docs/SERVING.md, "Engines", says what was checked and how).
`puzzle_blocker` says which axis keeps a config out of the format; `read_hf` reads the format back.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..config.model import ModelConfig
from .hf_config import hf_config_to_native, native_to_hf_config
from .keymap import native_shapes, to_hf_key
from .remote_code.writer import TEMPLATE_DIR, TEMPLATE_FILES
from .stream import write_tensors

MODEL_TYPE = "nemotron_h_puzzle"
ARCHITECTURE = "NemotronHPuzzleForCausalLM"
AUTO_MAP = {
    "AutoConfig": "configuration_elastic_hybrid.NemotronHPuzzleConfig",
    "AutoModel": "modeling_elastic_hybrid.NemotronHPuzzleModel",
    "AutoModelForCausalLM": "modeling_elastic_hybrid.NemotronHPuzzleForCausalLM",
}
_BLOCK_TYPES = {"M": "mamba", "*": "attention", "-": "mlp"}
# Stock NemotronH keys left out: those transformers 5.24 spells its own way (layers_block_type with
# linear/full_attention) or that the Puzzle keys replace, and the MoE defaults of a model without MoE blocks
# (a present num_experts_per_tok / n_routed_experts makes loaders take the model for a MoE one).
_DROPPED = (
    "layers_block_type", "mtp_layers_block_type", "architectures", "model_type", "auto_map", "n_routed_experts",
    "n_shared_experts", "moe_intermediate_size", "moe_shared_expert_intermediate_size", "moe_latent_size",
    "moe_shared_expert_overlap", "num_experts_per_tok", "routed_scaling_factor", "n_group", "topk_group",
    "norm_topk_prob", "output_router_logits",
)  # fmt: skip


def uniform_mlp(config: ModelConfig) -> ModelConfig:
    """`config` with every MLP layer at the widest size: the stock NemotronH config it shares every other key with."""
    sizes = config.mlp_sizes_per_layer()
    return replace(config, intermediate_size=max(sizes) if sizes else config.intermediate_size)


def puzzle_blocker(config: ModelConfig) -> str | None:
    """Why the Puzzle format cannot express `config` (one line naming the axis or field), or None if it can."""
    if config.family != "nemotron_h":
        return f"the Puzzle format is NemotronH's; this is a {config.family} model"
    if len(set(config.attention_heads_per_layer())) > 1:
        return "per-layer attention heads (axis attention_heads): Puzzle attention blocks share one head count"
    if len(set(config.mamba_heads_per_layer())) > 1:
        return "per-layer Mamba heads (axis mamba_heads): Puzzle Mamba blocks share one head count"
    if config.mlp_activation != "relu2":
        return f"mlp_activation {config.mlp_activation!r}: NemotronH engines run relu2 MLPs only"
    try:
        native_to_hf_config(uniform_mlp(config))
    except ValueError as e:
        return str(e).removeprefix("save_hf: ")
    return None


def puzzle_config(config: ModelConfig) -> dict[str, Any]:
    """The config.json of `config` in the Puzzle format (a dict; `puzzle_blocker(config)` must be None)."""
    stock = native_to_hf_config(uniform_mlp(config)).to_dict()
    sizes = iter(config.mlp_sizes_per_layer())
    blocks = [
        {"block_type": "mlp", "intermediate_size": next(sizes)} if c == "-" else {"block_type": _BLOCK_TYPES[c]}
        for c in config.pattern
    ]
    out = {k: v for k, v in stock.items() if k not in _DROPPED}
    out.update(
        architectures=[ARCHITECTURE],
        model_type=MODEL_TYPE,
        auto_map=dict(AUTO_MAP),
        block_configs=blocks,
        mtp_block_configs=[],  # no multi-token-prediction head
        hybrid_override_pattern=config.pattern,
        layers_block_type=[b["block_type"] for b in blocks],
        num_hidden_layers=config.num_layers,
    )
    return out


def puzzle_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors under NemotronH names, the head stored even when tied (CPU, contiguous)."""
    state = model.state_dict()
    tensors = {
        to_hf_key(k, "nemotron_h"): state[k].detach().to("cpu").contiguous() for k in native_shapes(model.config)
    }
    if model.config.tie_word_embeddings:
        tensors["lm_head.weight"] = state["embeddings.weight"].detach().to("cpu").clone()
    return tensors


def write_puzzle(model: torch.nn.Module, folder: Path) -> None:
    """Write config.json, model.safetensors, generation_config.json and the modeling code into `folder`.

    Raises:
        ValueError: the format cannot express the model (the line of `puzzle_blocker`).
    """
    from transformers import GenerationConfig

    from .remote_code.configuration_elastic_hybrid import NemotronHPuzzleConfig  # deferred: transformers

    blocker = puzzle_blocker(model.config)
    if blocker:
        raise ValueError(f"format puzzle: cannot express {blocker}")
    tensors = puzzle_state_dict(model)
    config = NemotronHPuzzleConfig.from_dict(puzzle_config(model.config))
    config.dtype = tensors["backbone.embeddings.weight"].dtype
    config.save_pretrained(str(folder))
    write_tensors(folder / "model.safetensors", tensors, {"format": "pt"})  # streamed, one tensor at a time
    if any(getattr(model.config, k) is not None for k in ("bos_token_id", "eos_token_id", "pad_token_id")):
        GenerationConfig.from_model_config(config).save_pretrained(str(folder))
    for name in TEMPLATE_FILES:
        shutil.copyfile(TEMPLATE_DIR / name, folder / name)


def native_config_from_puzzle(raw: dict[str, Any], where: str) -> ModelConfig:
    """The ModelConfig of a Puzzle config.json (parsed), with one-line errors naming the key."""
    from transformers import NemotronHConfig  # deferred: transformers' model registry is slow to import

    blocks = raw.get("block_configs")
    if not isinstance(blocks, list) or not blocks:
        raise ValueError(f"{where}: {MODEL_TYPE} config needs a non-empty block_configs list")
    chars, sizes = [], []
    for i, block in enumerate(blocks):
        kind = block.get("block_type") if isinstance(block, dict) else None
        char = {v: k for k, v in _BLOCK_TYPES.items()}.get(kind)
        if char is None:
            raise ValueError(f"{where}: block_configs.{i}.block_type {kind!r} is not supported (mamba, attention, mlp)")
        extra = sorted(set(block) - {"block_type", "intermediate_size"})
        if extra:  # a per-block field this reader would silently drop (a sliding window, MoE sizes, ...)
            raise ValueError(f"{where}: block_configs.{i}.{extra[0]} is not supported")
        if char == "-":
            sizes.append(block.get("intermediate_size"))
        chars.append(char)
    if raw.get("mtp_block_configs"):
        raise ValueError(f"{where}: mtp_block_configs (a multi-token-prediction head) is not supported")
    pattern = "".join(chars)
    skip = (*_DROPPED, "block_configs", "mtp_block_configs", "num_hidden_layers", "hybrid_override_pattern")
    stock = {k: v for k, v in raw.items() if k not in skip}
    stock["hybrid_override_pattern"] = pattern
    stock["intermediate_size"] = max(sizes) if sizes else raw.get("intermediate_size", 1)
    try:
        config = hf_config_to_native(NemotronHConfig.from_dict(stock), where)
        return replace(config, intermediate_size=sizes if len(set(sizes)) > 1 else config.intermediate_size)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: invalid {MODEL_TYPE} config ({' '.join(str(e).split())})") from None
