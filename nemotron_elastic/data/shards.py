# SPDX-License-Identifier: Apache-2.0
"""Token shards: what `prepare` writes (docs/DESIGN.md 3.10), one pair of files per shard.

    NAME.bin   the tokens of whole documents, each followed by EOS, raw little-endian uint16 (a vocabulary of
               at most 65,536 tokens) or uint32, as `packed.py`'s token files
    NAME.idx   JSON: {"format", "dtype", "documents": [end offset of each document, in tokens], "tokens",
               "sha256" of the .bin bytes}

A shard is written under temporary names and renamed into place, the index last: a shard with an index is
complete, and its `.bin` must hold exactly `tokens` tokens with that hash (a truncated or altered shard is
refused when opened). Shards are read with `np.memmap`, so opening one costs no memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..io import atomic_path
from .packed import token_dtype

FORMAT = "nemotron-elastic-shard-v1"


def write_shard(path: Path, documents: list[list[int]], vocab_size: int, eos_token_id: int) -> dict:
    """Write one shard (`path` without suffix) holding `documents` (token ids, EOS appended to each); returns
    its index. Nothing is visible under the final names until both files are complete."""
    dtype = token_dtype(vocab_size).newbyteorder("<")
    ends, flat = [], []
    total = 0
    for ids in documents:
        flat.append(np.asarray(ids, dtype=np.int64))
        flat.append(np.asarray([eos_token_id], dtype=np.int64))
        total += len(ids) + 1
        ends.append(total)
    tokens = np.concatenate(flat) if flat else np.zeros(0, dtype=np.int64)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"{path}: token id {int(tokens.max())} outside the vocabulary of {vocab_size}")
    data = tokens.astype(dtype).tobytes()
    index = {"format": FORMAT, "dtype": np.dtype(dtype).name, "documents": ends, "tokens": total,
             "sha256": hashlib.sha256(data).hexdigest()}
    with atomic_path(path.with_suffix(".bin")) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    with atomic_path(path.with_suffix(".idx")) as tmp:
        tmp.write_text(json.dumps(index))
    return index


def _sha256(path: Path, block: int = 1 << 24) -> str:
    """SHA-256 of a file, read 16 MB at a time (a shard can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


class Shard:
    """An opened shard: `tokens` (np.memmap of (tokens,)) and `ends` (document end offsets).

    Raises:
        ValueError: no index, a malformed index, or a `.bin` whose size or hash does not match it.
    """

    def __init__(self, path: str | Path, verify: bool = True):
        self.path = Path(path)
        idx = self.path.with_suffix(".idx")
        try:
            index = json.loads(idx.read_text())
            ends, count, dtype = list(index["documents"]), int(index["tokens"]), np.dtype(index["dtype"])
        except FileNotFoundError:
            raise ValueError(f"{idx}: no shard index (an unfinished shard)") from None
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{idx}: malformed shard index ({e})") from None
        if index.get("format") != FORMAT or (ends and ends[-1] != count):
            raise ValueError(f"{idx}: not a {FORMAT} index")
        binary = self.path.with_suffix(".bin")
        size = binary.stat().st_size if binary.is_file() else -1
        if size != count * dtype.itemsize:
            raise ValueError(f"{binary}: {size} bytes, the index says {count * dtype.itemsize}: truncated or altered")
        if verify and _sha256(binary) != index["sha256"]:
            raise ValueError(f"{binary}: its bytes do not match the index's sha256: altered")
        self.ends = ends
        little = dtype.newbyteorder("<")
        self.tokens = np.memmap(binary, dtype=little, mode="r", shape=(count,)) if count else np.zeros(0, little)

    def document(self, i: int) -> np.ndarray:
        """Document i's tokens, with its EOS."""
        start = self.ends[i - 1] if i else 0
        return np.asarray(self.tokens[start : self.ends[i]])

    def __len__(self) -> int:
        return len(self.ends)
