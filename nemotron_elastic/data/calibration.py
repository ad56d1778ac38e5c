# SPDX-License-Identifier: Apache-2.0
"""Calibration samples for importance estimation: N windows of L tokens drawn from the user's text.

Input: a file or a folder of the user's documents, read by `documents.py` (text, jsonl, parquet and arrow
files; a folder is searched recursively, files in sorted path order).

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
from .documents import load_documents


def read_documents(path: str | os.PathLike) -> list[str]:
    """Every non-blank document under `path` (`documents.load_documents`, its `text` field / column).

    Raises:
        ValueError: missing path, undecodable or malformed file, or no non-blank document at all.
    """
    if not Path(path).exists():  # named as calibration data: the score command has several paths
        raise ValueError(f"{path}: no such data file or folder")
    return load_documents(path)


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
