# SPDX-License-Identifier: Apache-2.0
"""One loader for every kind of model path.

`load_model(path)` accepts a native folder, an HF folder (config.json + safetensors, NemotronH or Llama),
a `.gguf` file, or a folder holding exactly one `.gguf` (`io.resolve_checkpoint` tells them apart). It
builds the model on the meta device and loads the tensors with `assign=True`, so the weights are allocated
once.
"""

from __future__ import annotations

import os

import torch

from ..config.model import ModelConfig
from ..io import resolve_checkpoint
from ..model.hybrid import HybridLM
from .gguf import read_gguf
from .hf import read_hf
from .native import read_native


def read_checkpoint(path: str | os.PathLike) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(config, native state dict) from any supported model path (see `io.resolve_checkpoint`)."""
    kind, p = resolve_checkpoint(path)
    if kind == "native":
        return read_native(p)
    if kind == "hf":
        return read_hf(p)
    return read_gguf(p)


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"dtype: unknown torch dtype {dtype!r}")
    return value


def build_model(
    config: ModelConfig,
    state_dict: dict[str, torch.Tensor],
    dtype: torch.dtype | str | None = None,
    device: torch.device | str = "cpu",
) -> torch.nn.Module:
    """A HybridLM holding `state_dict`, built on meta and loaded with `assign=True` (no second copy).

    Args:
        config: the architecture.
        state_dict: native keys; a tied lm_head may be absent. Consumed (entries are moved / cast).
        dtype: floating dtype of every parameter; None keeps the dtype of `embeddings.weight`.
        device: where the parameters live.

    Returns:
        The model in eval mode, tied weights re-tied.
    """
    dtype = _as_dtype(dtype) or state_dict["embeddings.weight"].dtype
    with torch.device("meta"):
        model = HybridLM(config)
    for key in list(state_dict):
        tensor = state_dict[key]
        state_dict[key] = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else None)
    if config.tie_word_embeddings:
        state_dict["lm_head.weight"] = state_dict["embeddings.weight"]
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.tie_weights()  # assign=True gave lm_head its own Parameter object
    return model.eval()


def load_model(
    path: str | os.PathLike, dtype: torch.dtype | str | None = None, device: torch.device | str = "cpu"
) -> torch.nn.Module:
    """Load a HybridLM from a native folder, an HF folder, a .gguf file or a folder with one .gguf.

    Args:
        path: the model path.
        dtype: parameter dtype (None: as stored; GGUF files are dequantised to float32).
        device: target device.

    Returns:
        The model, in eval mode.
    """
    config, state_dict = read_checkpoint(path)
    return build_model(config, state_dict, dtype, device)

