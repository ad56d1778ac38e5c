# SPDX-License-Identifier: Apache-2.0
"""Native checkpoints: the project's own folder format for a HybridLM.

    config.yaml          the ModelConfig (strict YAML, see config/yaml_io.py)
    model.safetensors    native state-dict keys (a tied lm_head is stored once, as embeddings.weight)
    tokenizer files      optional (tokenizer.json, tokenizer_config.json, ...)

Every folder written here is built under a temporary sibling name and renamed into place when complete
(`io.atomic_output_dir`), so a failing save leaves nothing behind and an existing folder is replaced only by
a finished one. `checkpoint/load.py` reads this format and every other one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..config.model import ModelConfig
from ..config.yaml_io import load_yaml, save_yaml
from ..io import CONFIG_NAME, WEIGHTS_NAME, atomic_output_dir, read_safetensors, save_tokenizer
from .keymap import check_state_dict
from .stream import write_tensors


def native_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors as stored on disk: contiguous, on CPU, a tied lm_head left out."""
    tensors = {}
    for key, value in model.state_dict().items():
        if key == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        tensors[key] = value.detach().to("cpu").contiguous()
    return tensors


def write_native(folder: Path, model: torch.nn.Module, tokenizer: Any = None) -> None:
    """Write the files of a native checkpoint into an existing (temporary) `folder`."""
    write_tensors(folder / WEIGHTS_NAME, native_state_dict(model), {"format": "pt"})  # one tensor at a time
    write_native_files(folder, model.config, tokenizer)


def write_native_files(folder: Path, config: Any, tokenizer: Any = None) -> None:
    """The files of a native checkpoint besides its weights: config.yaml and the tokenizer."""
    save_yaml(config, folder / CONFIG_NAME)
    save_tokenizer(tokenizer, folder)


def save_native(
    model: torch.nn.Module, out_dir: str | os.PathLike, tokenizer: Any = None, overwrite: bool = False
) -> Path:
    """Save `model` (a HybridLM) as a native checkpoint folder.

    Args:
        model: the model; its `config` is written as config.yaml.
        out_dir: the folder to create.
        tokenizer: optional transformers tokenizer or `tokenizers.Tokenizer`, saved alongside.
        overwrite: replace an existing non-empty folder.

    Returns:
        The folder written.
    """
    with atomic_output_dir(out_dir, overwrite) as tmp:
        write_native(tmp, model, tokenizer)
    return Path(out_dir)


def read_native(path: str | os.PathLike) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Read a native checkpoint folder: (config, state dict), shapes checked against the config."""
    folder = Path(path)
    config = load_yaml(ModelConfig, folder / CONFIG_NAME)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: has {CONFIG_NAME} but no {WEIGHTS_NAME}")
    state_dict = read_safetensors(weights)
    check_state_dict(state_dict, config, str(weights))
    return config, state_dict


def peek_config(path: str | os.PathLike) -> ModelConfig | None:
    """The config of a native (or elastic) checkpoint folder without reading its weights; None for HF /
    GGUF paths, whose config needs the converter (the caller loads the model first)."""
    path = Path(path)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        return load_yaml(ModelConfig, path / CONFIG_NAME)
    return None
