# SPDX-License-Identifier: Apache-2.0
"""Native checkpoints, and one loader for every kind of model path.

A native checkpoint is a folder:

    config.yaml          the ModelConfig (strict YAML, see configio.py)
    model.safetensors    native state-dict keys (a tied lm_head is stored once, as embeddings.weight)
    tokenizer files      optional (tokenizer.json, tokenizer_config.json, ...)

`load_model(path)` accepts a native folder, an HF folder (config.json + safetensors, NemotronH or Llama),
a `.gguf` file, or a folder holding exactly one `.gguf`. It builds the model on the meta device and loads
the tensors with `assign=True`, so the weights are allocated once.

Every folder written here is built under a temporary sibling name and renamed into place when complete,
so a failing save leaves nothing behind and an existing folder is replaced only by a finished one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import ModelConfig
from .configio import load_yaml, save_yaml

CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")

CheckpointKind = Literal["native", "hf", "gguf"]


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder that becomes `out_dir` when the block finishes without error.

    Args:
        out_dir: the destination folder.
        overwrite: replace an existing non-empty `out_dir` (only once the new folder is complete).

    Raises:
        FileExistsError: `out_dir` is a non-empty folder and `overwrite` is False, or is a file.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: folder exists and is not empty (pass overwrite=True to replace it)")
    created = [p for p in reversed(out.absolute().parents) if not p.exists()]  # removed again on failure
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            # Move the old folder aside first: a rename cannot replace a non-empty folder.
            old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in reversed(created):
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise


def save_tokenizer(tokenizer: Any, folder: Path) -> None:
    """Write a transformers tokenizer (or a raw `tokenizers.Tokenizer`) into `folder`."""
    if tokenizer is None:
        return
    if not hasattr(tokenizer, "save_pretrained"):
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer)  # a raw `tokenizers.Tokenizer`
    tokenizer.save_pretrained(str(folder))


def native_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors as stored on disk: contiguous, on CPU, a tied lm_head left out."""
    tensors = {}
    for key, value in model.state_dict().items():
        if key == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        tensors[key] = value.detach().to("cpu").contiguous()
    return tensors


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
    tensors = native_state_dict(model)
    with atomic_output_dir(out_dir, overwrite) as tmp:
        save_yaml(model.config, tmp / CONFIG_NAME)
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        save_tokenizer(tokenizer, tmp)
    return Path(out_dir)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of one safetensors file (CPU), with a one-line error for a corrupt file."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({' '.join(str(e).split())})") from None


def read_native(path: str | os.PathLike) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Read a native checkpoint folder: (config, state dict), shapes checked against the config."""
    from .export.hf import check_state_dict

    folder = Path(path)
    config = load_yaml(ModelConfig, folder / CONFIG_NAME)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: has {CONFIG_NAME} but no {WEIGHTS_NAME}")
    state_dict = read_safetensors(weights)
    check_state_dict(state_dict, config, str(weights))
    return config, state_dict


def resolve_checkpoint(path: str | os.PathLike) -> tuple[CheckpointKind, Path]:
    """Tell which kind of model `path` is: ("native", folder), ("hf", folder) or ("gguf", file).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the path is none of the supported kinds (or a folder with several .gguf files).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_file():
        if p.suffix == ".gguf":
            return "gguf", p
        raise ValueError(f"{p}: expected a model folder or a .gguf file")
    if (p / CONFIG_NAME).is_file():
        return "native", p
    if (p / "config.json").is_file():
        return "hf", p
    ggufs = sorted(p.glob("*.gguf"))
    if len(ggufs) == 1:
        return "gguf", ggufs[0]
    if ggufs:
        names = ", ".join(g.name for g in ggufs)
        raise ValueError(f"{p}: holds several .gguf files ({names}); pass the one to load")
    raise ValueError(f"{p}: no {CONFIG_NAME} (native), config.json (HF) or .gguf file: not a model folder")


def read_checkpoint(path: str | os.PathLike) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(config, native state dict) from any supported model path (see `resolve_checkpoint`)."""
    kind, p = resolve_checkpoint(path)
    if kind == "native":
        return read_native(p)
    if kind == "hf":
        from .export.hf import read_hf

        return read_hf(p)
    from .export.gguf import read_gguf

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
    from .model import HybridLM

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


def load_tokenizer(path: str | os.PathLike) -> Any:
    """The tokenizer stored with a model path (same kinds as `load_model`); None if there is none."""
    kind, p = resolve_checkpoint(path)
    from transformers import AutoTokenizer

    if kind == "gguf":
        return AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    if not any((p / name).is_file() for name in TOKENIZER_FILES):
        return None
    # trust_remote_code=False: a remote-code export's config.json must not make the tokenizer load prompt
    return AutoTokenizer.from_pretrained(str(p), trust_remote_code=False)
