# SPDX-License-Identifier: Apache-2.0
"""One loader for every kind of model path.

`load_model(path)` accepts a native folder, an HF folder (config.json + safetensors, NemotronH or Llama),
a `.gguf` file, or a folder holding exactly one `.gguf` (`io.resolve_checkpoint` tells them apart). It
builds the model on the meta device and loads the tensors with `assign=True`, so the weights are allocated
once. `load_sharded` reads only one rank's rows of every tensor, for FSDP.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch
from safetensors import safe_open
from torch.distributed.tensor import DTensor

from ..config.model import ModelConfig
from ..config.yaml_io import load_yaml
from ..io import CONFIG_NAME, WEIGHTS_NAME, resolve_checkpoint
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



def shard_rows(tensor: DTensor) -> tuple[int, int]:
    """[start, stop) of dim 0 that this rank holds of a DTensor sharded on dim 0 (FSDP2: `torch.chunk`
    sizes, ceil(rows / shards) per shard, the last ones shorter or empty); under HSDP the mesh's
    replicate dimension holds whole copies and does not move the rows."""
    start, size = 0, tensor.shape[0]
    for dim, placement in enumerate(tensor.placements):
        if placement.is_shard():
            if placement.dim != 0:
                raise ValueError(f"sharded on dim {placement.dim}; only row (dim 0) shards are supported")
            chunk = math.ceil(size / tensor.device_mesh.size(dim))
            offset = min(tensor.device_mesh.get_local_rank(dim) * chunk, size)
            start, size = start + offset, min(chunk, size - offset)
    return start, start + size


def load_sharded(
    path: str | os.PathLike,
    dtype: torch.dtype,
    device: torch.device | str,
    shard: Callable[[torch.nn.Module], None],
) -> HybridLM:
    """A native checkpoint loaded shard by shard: no process ever holds the whole model.

    The model is built on the meta device, `shard` wraps it (FSDP2's `fully_shard` per block and root, which
    splits parameters into row blocks as `torch.chunk` does), `to_empty` allocates this rank's rows only
    (and whole any parameter left unsharded), and those rows are read from the safetensors file with
    `get_slice`.

    Args:
        path: a native checkpoint folder (config.yaml + model.safetensors).
        dtype: the parameters' dtype (the file's values are cast on the way in).
        device: where this rank's shards live.
        shard: wraps the meta model in place (parameters become row-sharded DTensors).

    Raises:
        ValueError: not a native checkpoint, or a tensor missing from the file or of another shape.
    """
    kind, folder = resolve_checkpoint(path)
    if kind != "native":
        raise ValueError(f"{path}: loading shard by shard needs a native checkpoint, got a {kind} one "
                         "(convert it with `nemotron-elastic import`)")
    config = load_yaml(ModelConfig, folder / CONFIG_NAME)
    with torch.device("meta"):
        model = HybridLM(config)
    shard(model)
    model.to_empty(device=device)  # allocates this rank's rows of every parameter, nothing more
    weights = folder / WEIGHTS_NAME
    with safe_open(str(weights), framework="pt", device="cpu") as f, torch.no_grad():
        keys = set(f.keys())
        for name, param in model.named_parameters():  # a tied lm_head is listed (and stored) once
            key = name if name in keys or not config.tie_word_embeddings else "embeddings.weight"
            if key not in keys:
                raise ValueError(f"{weights}: missing tensor {key}")
            stored = f.get_slice(key)
            if tuple(stored.get_shape()) != tuple(param.shape):
                raise ValueError(f"{weights}: {key} has shape {tuple(stored.get_shape())}, expected "
                                 f"{tuple(param.shape)} from the config")
            local, (start, stop) = (param.to_local(), shard_rows(param)) if isinstance(param, DTensor) else (
                param, (0, param.shape[0] if param.dim() else 0))
            local.copy_((stored[start:stop] if param.dim() else stored[:]).to(dtype))
    return model.eval()
