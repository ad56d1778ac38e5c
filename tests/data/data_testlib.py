# SPDX-License-Identifier: Apache-2.0
"""Helpers for the data-layer tests: small training texts and synthetic packed token files."""

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from nemotron_elastic.data.packed import PackedMeta, PackedTokens, token_dtype

SMALL_TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 20,
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 10,
    "Wikipedia is a free online encyclopedia, written and maintained by volunteers. " * 15,
    "Numbers 0 1 2 3 4 5 6 7 8 9 and punctuation: ; , . ! ? ( ) [ ] { } " * 10,
]


def write_packed(path: Path, tokens: np.ndarray, vocab_size: int | None = None) -> PackedTokens:
    """Write `tokens` as a packed file directly (no tokenizer), so tests can read arange streams."""
    vocab_size = int(tokens.max()) + 1 if vocab_size is None else vocab_size
    dtype = token_dtype(vocab_size)
    tokens.astype(dtype.newbyteorder("<")).tofile(path)
    meta = PackedMeta(vocab_size, dtype.name, int(tokens.size), 1, 0, "synthetic", f"arange:{tokens.size}")
    path.with_suffix(".json").write_text(json.dumps(asdict(meta)))
    return PackedTokens(path)
