# SPDX-License-Identifier: Apache-2.0
"""Llama sub-models in NVIDIA's DeciLM / Llama-Nemotron format (model_type "nemotron-nas", `DeciLMForCausalLM`).

A Llama sub-model whose MLP widths differ per layer, or whose stack lost single attention / MLP blocks, is
written as:

    config.json          architectures ["DeciLMForCausalLM"], model_type "nemotron-nas", the Llama keys
                         (hidden_size, num_attention_heads, rms_norm_eps, rope_theta / rope_scaling, ...) and
                         `block_configs`, one {"attention": {...}, "ffn": {...}} per decoder layer, `auto_map`
    model.safetensors    Llama's tensor names ("model.layers.{i}.self_attn.q_proj.weight", ...), nothing for a
                         dropped half; "lm_head.weight" only when untied
    *_decilm.py + the attention / MLP modules (remote_code/): transformers modeling code

Native blocks pair into decoder layers in order: an attention block ('*') opens a layer, an MLP block ('-')
closes it; a '-' with no '*' before it is a layer whose attention is `no_op`, a '*' followed by another '*'
is a layer whose MLP is `no_op`. So every Llama depth cut is expressible. The MLP widths are not: DeciLM
gives a layer the width int(2 * ffn_mult * hidden / 3) rounded up to a multiple of 256 (`ffn_width`), so
only multiples of 256 are. The query heads are global (`num_attention_heads`); only the KV heads may vary per
layer (`n_heads_in_group`), which the native model does not do. `decilm_blocker` names the axis that keeps a
config out; `read_decilm_config` reads the format back (docs/SERVING.md, "Engines").
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ..config.model import ModelConfig
from .hf_decoder import rope_from_hf
from .keymap import check_state_dict, native_shapes
from .remote_code.configuration_decilm import FFN_ROUNDING, DeciLMConfig, ffn_width
from .remote_code.writer import TEMPLATE_DIR
from .stream import write_tensors

MODEL_TYPE = "nemotron-nas"
ARCHITECTURE = "DeciLMForCausalLM"
AUTO_MAP = {
    "AutoConfig": "configuration_decilm.DeciLMConfig",
    "AutoModel": "modeling_decilm.DeciLMModel",
    "AutoModelForCausalLM": "modeling_decilm.DeciLMForCausalLM",
}
TEMPLATE_FILES = ("configuration_decilm.py", "modeling_decilm.py", "mixers_elastic_hybrid.py", "ssd_elastic_hybrid.py")
_GLOBAL = {"embeddings.weight": "model.embed_tokens.weight", "norm_f.weight": "model.norm.weight",
           "lm_head.weight": "lm_head.weight"}  # fmt: skip
_NATIVE = re.compile(r"^layers\.(\d+)\.(norm\.weight|mixer\.(.+))$")


def ffn_mult_for(width: int, hidden: int) -> float | None:
    """The ffn_mult whose DeciLM width is exactly `width` in a model of width `hidden`, or None if there is none."""
    mult = round(3 * width / (2 * hidden), 6)  # 6 decimals: what published configs (and some readers) keep
    return mult if ffn_width(mult, hidden) == width else None


def decilm_blocker(config: ModelConfig) -> str | None:
    """Why the DeciLM format cannot express `config` (one line naming the axis or field), or None if it can."""
    if config.family != "llama":
        return f"the DeciLM format is Llama's; this is a {config.family} model"
    if len(set(config.attention_heads_per_layer())) > 1:
        return "per-layer attention heads (axis attention_heads): DeciLM layers share num_attention_heads"
    for i, width in enumerate(config.mlp_sizes_per_layer()):
        if ffn_mult_for(width, config.hidden_size) is None:
            return (f"MLP width {width} of MLP layer {i} (axis mlp): DeciLM widths are int(2 * ffn_mult * hidden / 3) "
                    f"rounded up to a multiple of {FFN_ROUNDING}")  # fmt: skip
    if config.rope_theta is None or not config.mlp_gated or config.mlp_activation != "silu":
        return "a Llama stack needs RoPE and gated SiLU MLPs"
    if config.o_proj_bias != config.attention_bias or config.attention_qk_norm or config.sliding_window:
        return "attention_out_bias / attention_qk_norm / sliding_window: DeciLM attention is Llama's"
    return None


def layer_plan(pattern: str) -> list[tuple[int | None, int | None]]:
    """(native attention block or None, native MLP block or None) of each decoder layer, in order."""
    plan, i = [], 0
    while i < len(pattern):
        attn = i if pattern[i] == "*" else None
        i += attn is not None
        mlp = i if i < len(pattern) and pattern[i] == "-" else None
        i += mlp is not None
        plan.append((attn, mlp))
    return plan


def decilm_config(config: ModelConfig) -> dict[str, Any]:
    """The config.json of `config` in the DeciLM format (`decilm_blocker(config)` must be None)."""
    heads = config.attention_heads_per_layer()
    n_heads = heads[0] if heads else config.num_key_value_heads
    sizes = dict(zip([i for i, c in enumerate(config.pattern) if c == "-"], config.mlp_sizes_per_layer()))
    blocks = []
    for attn, mlp in layer_plan(config.pattern):
        group = None if attn is None else n_heads // config.num_key_value_heads
        mult = None if mlp is None else ffn_mult_for(sizes[mlp], config.hidden_size)
        blocks.append({
            "attention": {"n_heads_in_group": group, "no_op": attn is None, "replace_with_linear": False,
                          "num_sink_tokens": None, "sparsify": None, "unshifted_sink": False,
                          "use_prefill_window_in_sink_attention": False, "window_length": None},
            "ffn": {"ffn_mult": mult, "no_op": mlp is None, "replace_with_linear": False, "sparsify": None},
        })  # fmt: skip
    rope = copy.deepcopy(config.rope_parameters) or {"rope_type": "default"}
    rope["rope_theta"] = rope.get("rope_theta", config.rope_theta)
    return {
        "architectures": [ARCHITECTURE], "model_type": MODEL_TYPE, "auto_map": dict(AUTO_MAP),
        "block_configs": blocks, "num_hidden_layers": len(blocks), "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size, "num_attention_heads": n_heads, "head_dim": config.head_dim,
        "hidden_act": "silu", "rms_norm_eps": config.norm_eps, "pretraining_tp": 1, "rope_parameters": rope,
        "max_position_embeddings": config.max_position_embeddings, "attention_bias": config.attention_bias,
        "attention_dropout": 0.0, "mlp_bias": config.mlp_bias, "initializer_range": config.initializer_range,
        "tie_word_embeddings": config.tie_word_embeddings, "use_cache": True, "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id,
    }  # fmt: skip


def key_map(config: ModelConfig) -> dict[str, str]:
    """Native key -> DeciLM key for every tensor of `config` (a tied head left out, as in stock Llama)."""

    where = {}  # native block -> (decoder layer, is_mlp)
    for layer, (attn, mlp) in enumerate(layer_plan(config.pattern)):
        where.update({b: (layer, b == mlp) for b in (attn, mlp) if b is not None})
    out = {}
    for key in native_shapes(config):
        match = _NATIVE.match(key)
        if match is None:
            out[key] = _GLOBAL[key]
            continue
        layer, is_mlp = where[int(match.group(1))]
        if match.group(3) is None:
            name = "post_attention_layernorm.weight" if is_mlp else "input_layernorm.weight"
        else:
            name = ("mlp." if is_mlp else "self_attn.") + match.group(3)
        out[key] = f"model.layers.{layer}.{name}"
    return out


def write_decilm(model: torch.nn.Module, folder: Path) -> None:
    """Write config.json, model.safetensors, generation_config.json and the modeling code into `folder`.

    Raises:
        ValueError: the format cannot express the model (the line of `decilm_blocker`).
    """
    from transformers import GenerationConfig

    blocker = decilm_blocker(model.config)
    if blocker:
        raise ValueError(f"format decilm: cannot express {blocker}")
    state = model.state_dict()
    tensors = {hf: state[k].detach().to("cpu").contiguous() for k, hf in key_map(model.config).items()}
    raw = decilm_config(model.config)
    config = DeciLMConfig.from_dict(raw)  # validates what the modeling code will read
    out = config.to_dict()
    out["dtype"] = str(tensors["model.embed_tokens.weight"].dtype).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")  # every key, no diff
    write_tensors(folder / "model.safetensors", tensors, {"format": "pt"})  # streamed, one tensor at a time
    if any(raw[k] is not None for k in ("bos_token_id", "eos_token_id", "pad_token_id")):
        GenerationConfig.from_model_config(config).save_pretrained(str(folder))
    for name in TEMPLATE_FILES:
        shutil.copyfile(TEMPLATE_DIR / name, folder / name)


def native_config_from_decilm(raw: dict[str, Any], where: str) -> ModelConfig:
    """The ModelConfig of a DeciLM config.json (parsed), with one-line errors naming the key."""

    try:
        cfg = DeciLMConfig.from_dict({k: v for k, v in raw.items() if k != "auto_map"})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: invalid {MODEL_TYPE} config ({' '.join(str(e).split())})") from None
    if getattr(cfg, "pretraining_tp", 1) not in (1, None):
        raise ValueError(f"{where}: unsupported pretraining_tp {cfg.pretraining_tp} (must be 1)")
    pattern, sizes = "", []
    for i, block in enumerate(cfg.block_configs):
        pattern += "" if block.attention.no_op else "*"
        if cfg.mlp_width(i) is not None:
            pattern, sizes = pattern + "-", [*sizes, cfg.mlp_width(i)]
    if not pattern:
        raise ValueError(f"{where}: block_configs: every attention and MLP is no_op")
    theta, rope = rope_from_hf(cfg, where)
    try:
        return ModelConfig(
            family="llama", pattern=pattern, vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
            tie_word_embeddings=bool(cfg.tie_word_embeddings), norm_eps=cfg.rms_norm_eps,
            num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.kv_heads, head_dim=cfg.head_dim,
            rope_theta=theta, rope_parameters=rope, attention_bias=bool(cfg.attention_bias),
            max_position_embeddings=cfg.max_position_embeddings,
            intermediate_size=(sizes[0] if len(set(sizes)) == 1 else sizes) if sizes else 1,
            mlp_activation="silu", mlp_gated=True, mlp_bias=bool(cfg.mlp_bias),
            mamba_num_heads=ModelConfig.mamba_n_groups,  # no Mamba layers: one head per group, as the slicer sets
            initializer_range=cfg.initializer_range,
            **{k: _first(getattr(cfg, k, None)) for k in ("bos_token_id", "eos_token_id", "pad_token_id")},
        )  # fmt: skip
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: invalid {MODEL_TYPE} config ({' '.join(str(e).split())})") from None


def _first(value: Any) -> int | None:
    """HF allows a list of EOS ids (published Llama-Nemotron configs have three); the native config keeps one."""
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value else None
    return None if value is None else int(value)


def decilm_to_native_state_dict(
    tensors: dict[str, torch.Tensor], config: ModelConfig, where: str
) -> dict[str, torch.Tensor]:
    """Rename DeciLM tensors to native keys and check them against `config` (a tied head's copy dropped)."""

    inverse = {hf: k for k, hf in key_map(config).items()}
    if config.tie_word_embeddings:
        inverse["lm_head.weight"] = None  # stored by some writers although tied: the embeddings are the head
    native, unknown = {}, []
    for key, tensor in tensors.items():
        if key not in inverse:
            (unknown if not key.endswith("rotary_emb.inv_freq") else []).append(key)
        elif inverse[key] is not None:
            native[inverse[key]] = tensor
    check_state_dict(native, config, where, {k: hf for hf, k in inverse.items() if k}, unknown)
    return native
