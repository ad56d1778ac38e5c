# SPDX-License-Identifier: Apache-2.0
"""Read and write Hugging Face checkpoints (NemotronH, Llama, Qwen2, Qwen3, Mistral) as native configs and
tensors.

`read_hf(folder)` reads config.json and the safetensors weights (one file, or shards listed in
`model.safetensors.index.json`), converts both to native form and checks every tensor's shape against the
config. Pickled `pytorch_model.bin` files are never loaded.

`save_hf(model, folder)` writes a folder that `transformers.AutoModelForCausalLM.from_pretrained` loads
with no custom code: a stock config.json of the model's family (`NemotronHConfig`, `LlamaConfig`, ...),
model.safetensors (keys as transformers' own `save_pretrained` writes them), generation_config.json and the
tokenizer. A config the stock classes cannot express (per-layer widths, a Llama stack with single blocks
dropped) is an error unless
`allow_remote_code=True`: then the folder carries its own modeling code (`remote_code/`, loaded with
`trust_remote_code=True`). `read_hf` reads both forms back (the remote-code one without running its code), and
NVIDIA's heterogeneous NemotronH ("Puzzle", `puzzle.py`) and Llama ("DeciLM" / Llama-Nemotron, `decilm.py`)
formats too.

Official implementation: transformers `PreTrainedModel.save_pretrained` / `from_pretrained` (5.24).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch

from ..config.model import ModelConfig
from ..io import atomic_output_dir, read_safetensors, save_tokenizer
from .decilm import MODEL_TYPE as DECILM_MODEL_TYPE
from .decilm import decilm_to_native_state_dict, native_config_from_decilm
from .hf_config import hf_config_class, hf_config_to_native, native_to_hf_config
from .keymap import (
    IGNORED_HF_KEYS,
    NEMOTRON_H_IMPORT_PREFIXES,
    NEMOTRON_H_PREFIX,
    check_model_type,
    check_state_dict,
    from_hf_key,
    key_list,
    native_shapes,
    to_hf_key,
)
from .puzzle import MODEL_TYPE as PUZZLE_MODEL_TYPE
from .puzzle import native_config_from_puzzle
from .remote_code.writer import MODEL_TYPE as REMOTE_MODEL_TYPE
from .remote_code.writer import native_config_from_remote, remote_to_native_state_dict, write_remote_code
from .stream import write_tensors

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"


def _decode_float_tag(obj: dict) -> Any:
    """transformers writes inf / nan in config.json as {"__float__": "Infinity"}; read them back."""
    if len(obj) == 1 and isinstance(obj.get("__float__"), str):
        return float(obj["__float__"])
    return obj


def _hf_config(raw: dict, where: str) -> Any:
    """Build the transformers config class for `raw` (normalising legacy fields), with one-line errors."""
    model_type = check_model_type(raw.get("model_type"), where)
    if model_type == "nemotron_h":
        pattern = raw.get("hybrid_override_pattern")
        if isinstance(pattern, str) and set(pattern) - set("M*-E"):
            raise ValueError(
                f"{where}: hybrid_override_pattern {pattern!r} has characters other than M, *, -, E"
            )
    cls = hf_config_class(model_type)
    try:
        return cls.from_dict(raw)
    except Exception as e:  # transformers' strict dataclass errors are multi-line and of several types
        raise ValueError(f"{where}: invalid {model_type} config ({' '.join(str(e).split())})") from None


def _read_weights(folder: Path) -> tuple[dict[str, torch.Tensor], str]:
    """All tensors of an HF folder and the name to use in errors. Only safetensors is accepted."""
    if (folder / SAFE_WEIGHTS).is_file():
        return read_safetensors(folder / SAFE_WEIGHTS), str(folder / SAFE_WEIGHTS)
    index = folder / SAFE_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{index}: not a safetensors index (no valid weight_map: {e})") from None
        tensors: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            if not (folder / shard).is_file():
                raise FileNotFoundError(f"{index}: lists shard {shard}, which is missing")
            tensors.update(read_safetensors(folder / shard))
        absent = [k for k in weight_map if k not in tensors]
        if absent:
            raise ValueError(f"{index}: keys listed but not found in the shards: {key_list(absent)}")
        return tensors, str(index)
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")) or any(folder.glob("*.pth")):
        raise ValueError(
            f"{folder}: only pickled PyTorch weights (.bin/.pt) found; safetensors is required "
            "(re-save with transformers' save_pretrained, which writes model.safetensors)"
        )
    raise FileNotFoundError(f"{folder}: no {SAFE_WEIGHTS} or {SAFE_INDEX} (folder without weights)")


def hf_to_native_state_dict(
    tensors: dict[str, torch.Tensor], config: ModelConfig, where: str
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Rename HF tensors to native keys and check them against `config`.

    A tied NemotronH config whose file stores an lm_head different from the embeddings is imported untied:
    transformers' NemotronH does not tie, so that is the function the checkpoint computes.

    Returns:
        (config, native state dict); the config differs from the input only in `tie_word_embeddings`.
    """
    family = config.family
    native: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}
    unknown: list[str] = []
    for key, tensor in tensors.items():
        if IGNORED_HF_KEYS[family].search(key):
            continue
        native_key = from_hf_key(key, family)
        if native_key is None:
            unknown.append(key)
        elif native_key in native:
            raise ValueError(f"{where}: {names[native_key]} and {key} are the same tensor under two prefixes")
        else:
            native[native_key], names[native_key] = tensor, key
    if config.tie_word_embeddings and "lm_head.weight" in native:
        head = native.pop("lm_head.weight")
        emb = native.get("embeddings.weight")
        if family == "nemotron_h" and emb is not None and not torch.equal(head, emb):
            config = replace(config, tie_word_embeddings=False)
            native["lm_head.weight"] = head
    # Name missing tensors as this file would have (NemotronH: with the prefix the file itself uses).
    prefix = next((p for p in NEMOTRON_H_IMPORT_PREFIXES if any(k.startswith(p) for k in tensors)), None)
    for key in native_shapes(config):
        if key not in names:
            name = to_hf_key(key, family)
            if family == "nemotron_h" and prefix and name.startswith(NEMOTRON_H_PREFIX):
                name = prefix + name[len(NEMOTRON_H_PREFIX) :]
            names[key] = name
    check_state_dict(native, config, where, names, unknown)
    return config, native


def read_hf(path: str | os.PathLike) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Read an HF NemotronH or Llama folder as (native config, native state dict).

    Args:
        path: folder with config.json and model.safetensors (or a sharded safetensors index).

    Returns:
        The native config and tensors (CPU, dtype as stored).

    Raises:
        FileNotFoundError: missing folder, config.json or weights.
        ValueError: unsupported model_type or feature, pickle-only weights, key or shape mismatches.
    """
    folder = Path(path)
    if not folder.is_dir():
        if not folder.exists():
            raise FileNotFoundError(f"{folder}: no such folder")
        raise ValueError(f"{folder}: expected an HF model folder (config.json + model.safetensors)")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json")
    try:
        raw = json.loads(config_path.read_text(), object_hook=_decode_float_tag)
    except ValueError as e:
        raise ValueError(f"{config_path}: invalid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{config_path}: expected a JSON object")
    if raw.get("model_type") == REMOTE_MODEL_TYPE:  # an export with its own modeling code: read, never run
        config = native_config_from_remote(raw, str(config_path))
        tensors, where = _read_weights(folder)
        return config, remote_to_native_state_dict(tensors, config, where)
    if raw.get("model_type") == PUZZLE_MODEL_TYPE:  # NVIDIA's per-layer NemotronH format: NemotronH tensor names
        config = native_config_from_puzzle(raw, str(config_path))
        tensors, where = _read_weights(folder)
        return hf_to_native_state_dict(tensors, config, where)
    if raw.get("model_type") == DECILM_MODEL_TYPE:  # NVIDIA's per-layer Llama format (Llama-Nemotron)
        config = native_config_from_decilm(raw, str(config_path))
        tensors, where = _read_weights(folder)
        return config, decilm_to_native_state_dict(tensors, config, where)
    config = hf_config_to_native(_hf_config(raw, str(config_path)), str(config_path))
    tensors, where = _read_weights(folder)
    return hf_to_native_state_dict(tensors, config, where)


def native_to_hf_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors under HF keys, ready for safetensors (CPU, contiguous, no shared storage)."""
    config: ModelConfig = model.config
    state = model.state_dict()
    tensors = {  # CPU tensors stay themselves (no copy): a large model is written without a second copy
        to_hf_key(k, config.family): state[k].detach().to("cpu").contiguous() for k in native_shapes(config)
    }
    if config.tie_word_embeddings and config.family == "nemotron_h":
        # transformers' NemotronH never ties (its _tied_weights_keys is empty): store the head explicitly.
        tensors["lm_head.weight"] = state["embeddings.weight"].detach().to("cpu").clone()
    return tensors


HFExportKind = Literal["stock", "remote_code"]


def hf_export_kind(config: ModelConfig, allow_remote_code: bool = False) -> HFExportKind:
    """How `config` is exported: "stock" (a standard NemotronH / Llama folder) when the stock classes can
    express it, else "remote_code" (the folder carries its own modeling code) if allowed.

    Raises:
        ValueError: the stock classes cannot express `config` and `allow_remote_code` is False.
    """
    try:
        native_to_hf_config(config)
        return "stock"
    except ValueError as e:
        if not allow_remote_code:
            raise ValueError(f"{e} (allow_remote_code=True writes it with its own modeling code)") from None
        return "remote_code"


def write_hf(
    model: torch.nn.Module, folder: Path, tokenizer: Any = None, kind: HFExportKind | None = None
) -> HFExportKind:
    """Write the HF files of `model` into the existing empty `folder` (no atomic rename: see `save_hf`).

    Args:
        model: the HybridLM to write.
        folder: where to write.
        tokenizer: optional tokenizer saved alongside.
        kind: "stock", "remote_code", or None for `hf_export_kind(config)` (stock or an error).

    Returns:
        The kind written.
    """
    from transformers import GenerationConfig

    kind = kind or hf_export_kind(model.config)
    if kind == "remote_code":
        write_remote_code(model, folder)
    else:
        hf_config = native_to_hf_config(model.config)
        tensors = native_to_hf_state_dict(model)
        hf_config.dtype = tensors[to_hf_key("embeddings.weight", model.config.family)].dtype
        hf_config.save_pretrained(str(folder))
        write_tensors(folder / SAFE_WEIGHTS, tensors, {"format": "pt"})  # streamed: no second copy in memory
        ids = (hf_config.bos_token_id, hf_config.eos_token_id, hf_config.pad_token_id)
        if any(i is not None for i in ids):
            GenerationConfig.from_model_config(hf_config).save_pretrained(str(folder))
    save_tokenizer(tokenizer, folder)
    return kind


def save_hf(
    model: torch.nn.Module,
    out_dir: str | os.PathLike,
    tokenizer: Any = None,
    overwrite: bool = False,
    allow_remote_code: bool = False,
) -> Path:
    """Export a HybridLM as an HF checkpoint: stock NemotronH or Llama (by `config.family`) when possible.

    Args:
        model: the model to export.
        out_dir: the folder to create.
        tokenizer: optional tokenizer saved alongside.
        overwrite: replace an existing non-empty folder.
        allow_remote_code: write a config the stock classes cannot express (per-layer widths, ...) with its
            own modeling code (loaded with `trust_remote_code=True`) instead of raising.

    Returns:
        The folder written.

    Raises:
        ValueError: a config the stock HF classes cannot express, without `allow_remote_code`.
    """
    kind = hf_export_kind(model.config, allow_remote_code)  # validate before touching the disk
    with atomic_output_dir(out_dir, overwrite) as tmp:
        write_hf(model, tmp, tokenizer, kind)
    return Path(out_dir)
