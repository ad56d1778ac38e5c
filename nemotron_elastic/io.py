# SPDX-License-Identifier: Apache-2.0
"""Files on disk, written so that a reader never sees half of one, and model paths told apart.

- `atomic_path` / `write_text` / `write_json`: a file is written under a temporary sibling name and renamed
  into place when complete; a failure leaves the old file (or nothing) behind.
- `atomic_output_dir`: the same for a whole folder; `check_output_dir` refuses an output folder before any
  slow work starts.
- `read_safetensors`: every tensor of one safetensors file, with a one-line error for a corrupt file
  (weights are never unpickled).
- `resolve_checkpoint`: which kind of model a path is (native folder, HF folder, GGUF file).
- `save_tokenizer` / `load_tokenizer`: the tokenizer stored with a model, or in a tokenizer folder; never
  downloaded.
- `import_extra`: a module of an optional dependency (a pyproject extra), or one line naming the extra to
  install when its package is missing.

This module imports nothing of the package: every layer can use it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from safetensors import SafetensorError, safe_open

CONFIG_NAME = "config.yaml"  # a native checkpoint's ModelConfig (checkpoint/native.py)
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")

CheckpointKind = Literal["native", "hf", "gguf"]


# The optional dependencies (pyproject extras): top-level module -> (the package to install, its extra).
EXTRAS = {"lm_eval": ("lm-eval", "eval"), "matplotlib": ("matplotlib", "plots"), "datasets": ("datasets", "data")}


class MissingPathError(FileNotFoundError, ValueError):
    """An input path that does not exist: a missing file to the OS, bad input to the command line."""


class MissingExtraError(ImportError, ValueError):
    """An optional dependency that is not installed: an ImportError to Python, one line to the command line."""


def import_extra(module: str, purpose: str) -> ModuleType:
    """`importlib.import_module(module)` for a module of an optional dependency listed in `EXTRAS`.

    Args:
        module: e.g. "lm_eval.tasks" or "matplotlib".
        purpose: what needs it, the start of the error line (e.g. "eval --tasks").

    Raises:
        MissingExtraError: its package is not installed ("eval --tasks needs lm-eval: pip install
            'nemotron-elastic[eval]'"). An installed package that fails to import raises its own error.
    """
    top = module.split(".")[0]
    package, extra = EXTRAS[top]
    try:
        importlib.import_module(top)
    except ModuleNotFoundError as err:
        if err.name != top:  # the package is there but one of its own dependencies is not: its own error
            raise
        message = f"{purpose} needs {package}: pip install 'nemotron-elastic[{extra}]'"
        raise MissingExtraError(message, name=top) from None
    return importlib.import_module(module)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path` (same suffix) to write; it becomes `path` when the block succeeds.

    The folder of `path` is created if missing. The temporary file is removed in every case.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically, flushed to disk before the rename; returns the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "x", encoding="utf-8") as f:  # "x": a fresh file, created with the umask's permissions
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_json(path: str | os.PathLike, data: Any, indent: int = 2) -> Path:
    """Write `data` as indented JSON plus a final newline, atomically; returns the path."""
    return write_text(path, json.dumps(data, indent=indent) + "\n")


def check_output_dir(out: str | os.PathLike, overwrite: bool, hint: str = "pass overwrite=True to replace it") -> None:
    """Refuse `out` when it is a file, or a non-empty folder and `overwrite` is False.

    Args:
        out: the output folder about to be written.
        overwrite: whether a non-empty folder may be replaced.
        hint: how the caller's user asks for an overwrite (an API flag or a command-line option).

    Raises:
        FileExistsError: with one line naming `out`.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: folder exists and is not empty ({hint})")


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
    check_output_dir(out, overwrite)
    created = [p for p in reversed(out.absolute().parents) if not p.exists()]  # removed again on failure
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in reversed(created):
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise


def replace_dir(tmp: Path, out: Path) -> None:
    """Rename the finished folder `tmp` to `out`, replacing an existing `out` (moved aside first: a rename
    cannot replace a non-empty folder), so `out` is at every moment either the old or the new folder."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def read_safetensors(path: str | os.PathLike) -> dict[str, Any]:
    """All tensors of one safetensors file (CPU), with a one-line error for a corrupt file."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({' '.join(str(e).split())})") from None


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


def save_tokenizer(tokenizer: Any, folder: Path) -> None:
    """Write a transformers tokenizer (or a raw `tokenizers.Tokenizer`) into `folder`; None writes nothing."""
    if tokenizer is None:
        return
    if not hasattr(tokenizer, "save_pretrained"):
        from transformers import PreTrainedTokenizerFast  # deferred: transformers is heavy

        tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer)  # a raw `tokenizers.Tokenizer`
    tokenizer.save_pretrained(str(folder))


def _has_tokenizer_files(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def _is_model_folder(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file() or (folder / "config.json").is_file()


def load_tokenizer(path: str | os.PathLike, required: bool = False) -> Any:
    """The tokenizer stored at `path`, loaded with `AutoTokenizer` and never from the Hub.

    Args:
        path: a model path (native or HF folder, a .gguf file, a folder with one .gguf) or a folder that
            holds only a tokenizer (tokenizer.json / tokenizer_config.json, as `data/tokenizer.py` writes).
        required: raise instead of returning None when a model folder holds no tokenizer.

    Returns:
        The transformers tokenizer, or None for a model folder without one (unless `required`).

    Raises:
        MissingPathError: the path does not exist (both a FileNotFoundError and a ValueError).
        ValueError: one line: a folder that is neither a model nor a tokenizer, a corrupt tokenizer (and,
            with `required`, a model folder without one).
    """
    p = Path(path)
    if not p.exists():
        raise MissingPathError(f"{p}: no such tokenizer folder or model path")
    if p.is_dir() and _has_tokenizer_files(p):
        source, kwargs = p, {}
    else:
        if p.is_dir() and not any(p.glob("*.gguf")) and (required or not _is_model_folder(p)):
            raise ValueError(f"{p}: no tokenizer files (expected tokenizer.json or tokenizer_config.json)")
        kind, p = resolve_checkpoint(p)
        if kind != "gguf":
            return None
        source, kwargs = p.parent, {"gguf_file": p.name}
    from transformers import AutoTokenizer  # deferred: transformers is heavy and only this function needs it

    try:
        # trust_remote_code=False: a remote-code export's config.json must not make the tokenizer load prompt
        return AutoTokenizer.from_pretrained(str(source), local_files_only=True, trust_remote_code=False, **kwargs)
    except Exception as e:  # noqa: BLE001 - json, tokenizers and transformers each raise their own kinds
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{source}: corrupt or unreadable tokenizer ({first_line})") from None
