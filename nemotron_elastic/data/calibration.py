# SPDX-License-Identifier: Apache-2.0
"""Calibration samples for importance estimation: N windows of L tokens drawn from the user's text.

Input: a file or a folder (searched recursively, files in sorted path order) of
- plain text (`.txt`, `.md`, `.text`): one document per file;
- JSON lines (`.jsonl`): one document per line, its `text` field;
- Parquet (`.parquet`, read with pyarrow): one document per row of the `text` column.

The documents are tokenized with the parent's tokenizer (no special tokens), concatenated into one stream with
an EOS token between documents, and `num_samples` windows of `seq_len` tokens are drawn from the stream with a
seeded generator. When the stream holds at least `num_samples` disjoint windows, distinct disjoint windows are
drawn (no token is counted twice); otherwise windows start at random offsets and may overlap. The same files,
tokenizer, sizes and seed always give the same samples.

This is the calibration recipe of Minitron (https://arxiv.org/abs/2407.14679, Sec. 3: "a small calibration
dataset of 1024 samples") and of Model-Optimizer's `mcore_minitron` forward loop: plain forward passes over
random windows of pre-training-like text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..io import write_text
from .corpus import default_corpus

TEXT_SUFFIXES = (".txt", ".md", ".text")
SUFFIXES = (*TEXT_SUFFIXES, ".jsonl", ".parquet")


def data_files(path: str | os.PathLike) -> list[Path]:
    """The data files at `path`: the file itself, or every supported file under a folder (sorted).

    Raises:
        ValueError: the path does not exist, or a folder holds no supported file.
    """
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{p}: no such data file or folder")
    if p.is_file():
        return [p]
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
    if not files:
        raise ValueError(f"{p}: folder holds no {', '.join(SUFFIXES)} file")
    return files


def _read_jsonl(path: Path) -> list[str]:
    docs = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise ValueError(f"{path}:{number}: expected a JSON object with a string 'text' field")  # noqa: TRY004
            docs.append(text)
    return docs


def _read_parquet(path: Path) -> list[str]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"{path}: reading Parquet files needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(path, columns=["text"])
    except KeyError:  # pyarrow reports a missing column as a KeyError on some versions
        raise ValueError(f"{path}: Parquet file has no 'text' column") from None
    except (pa.ArrowException, OSError, ValueError) as err:  # corrupt or non-Parquet file
        raise ValueError(f"{path}: not a readable Parquet file with a 'text' column ({err})") from None
    return [t for t in table.column("text").to_pylist() if isinstance(t, str)]


def read_documents(path: str | os.PathLike) -> list[str]:
    """Every non-blank document under `path` (see the module docstring for the formats).

    Raises:
        ValueError: missing path, undecodable or malformed file, or no non-blank document at all.
    """
    docs: list[str] = []
    for file in data_files(path):
        suffix = file.suffix.lower()
        try:
            if suffix == ".jsonl":
                docs += _read_jsonl(file)
            elif suffix == ".parquet":
                docs += _read_parquet(file)
            else:
                docs.append(file.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"{file}: not UTF-8 text") from None
        except OSError as err:
            raise ValueError(f"{file}: cannot read ({err.strerror or err})") from None
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise ValueError(f"{path}: no usable text (every document is empty)")
    return docs


def tokenize_documents(docs: list[str], tokenizer: Any, eos_token_id: int | None = None) -> torch.Tensor:
    """One token stream: the documents' tokens (no special tokens) with EOS between documents.

    Args:
        docs: the documents.
        tokenizer: a transformers tokenizer or a raw `tokenizers.Tokenizer`.
        eos_token_id: the separator; None takes the tokenizer's EOS (no separator if it has none).

    Returns:
        (T,) long tensor.
    """
    if hasattr(tokenizer, "encode_batch"):  # raw tokenizers.Tokenizer
        ids = [e.ids for e in tokenizer.encode_batch(docs, add_special_tokens=False)]
    else:  # transformers tokenizer; verbose=False: documents longer than model_max_length are fine here
        ids = tokenizer(docs, add_special_tokens=False, verbose=False)["input_ids"]
        if eos_token_id is None:
            eos_token_id = getattr(tokenizer, "eos_token_id", None)
    stream: list[int] = []
    for i, doc_ids in enumerate(ids):
        if i and eos_token_id is not None:
            stream.append(eos_token_id)
        stream.extend(doc_ids)
    return torch.tensor(stream, dtype=torch.long)


def sample_windows(stream: torch.Tensor, num_samples: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """`num_samples` windows of `seq_len` tokens from `stream` (T,), drawn deterministically from `seed`.

    Returns:
        (num_samples, seq_len) long tensor.

    Raises:
        ValueError: non-positive sizes, or a stream shorter than one window.
    """
    if num_samples < 1 or seq_len < 1:
        raise ValueError(f"calibration: samples and seq_len must be positive, got {num_samples} x {seq_len}")
    total = stream.numel()
    if total < seq_len:
        raise ValueError(f"calibration: the data has {total} tokens, fewer than one sample of {seq_len}")
    gen = torch.Generator().manual_seed(seed)
    slots = total // seq_len
    if slots >= num_samples:  # distinct disjoint windows
        starts = torch.randperm(slots, generator=gen)[:num_samples] * seq_len
    else:  # too little data for disjoint windows: random (possibly overlapping) offsets
        starts = torch.randint(0, total - seq_len + 1, (num_samples,), generator=gen)
    return torch.stack([stream[s : s + seq_len] for s in starts.tolist()])


def calibration_samples(
    path: str | os.PathLike,
    tokenizer: Any,
    num_samples: int,
    seq_len: int,
    seed: int = 0,
    eos_token_id: int | None = None,
) -> torch.Tensor:
    """Calibration windows from the text at `path`, tokenized with the parent's tokenizer.

    Args:
        path: a text / jsonl / parquet file, or a folder of them.
        tokenizer: the parent's tokenizer (transformers or raw `tokenizers`).
        num_samples: N.
        seq_len: L.
        seed: the window draw.
        eos_token_id: separator between documents (None: the tokenizer's EOS).

    Returns:
        (N, L) long tensor.

    Raises:
        ValueError: missing or unreadable data, no usable text, or fewer tokens than one sample.
    """
    stream = tokenize_documents(read_documents(path), tokenizer, eos_token_id)
    return sample_windows(stream, num_samples, seq_len, seed)


def default_calibration_file(path: str | os.PathLike, every: int = 20) -> Path:
    """Write (once) a jsonl of every `every`-th training document of the packaged default corpus to `path`,
    the calibration text the demo and the reproduction study score with; returns the path."""
    path = Path(path)
    if not path.is_file():
        write_text(path, "".join(json.dumps({"text": d}) + "\n" for d in default_corpus("train")[::every]))
    return path
