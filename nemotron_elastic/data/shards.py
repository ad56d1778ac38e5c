# SPDX-License-Identifier: Apache-2.0
"""Token shards and prepared source folders: what `prepare` writes (docs/DESIGN.md 3.10), and opening them.

    NAME.bin    the tokens of whole documents, each followed by EOS, raw little-endian uint16 (a vocabulary of
                at most 65,536 tokens) or uint32, as nanoGPT's `train.bin`
    NAME.mask   chat sources only: one byte per token of NAME.bin, 1 where the token is the assistant's output
                (data/chat.py), 0 elsewhere (other turns, role headers, the EOS after each document)
    NAME.idx    JSON: {"format", "dtype", "documents": [end offset of each document, in tokens], "tokens",
                "sha256" of the .bin bytes[, "mask_sha256" of the .mask bytes]}

A shard is written under temporary names and renamed into place, the index last: a shard with an index is
complete, and its `.bin` (and `.mask`) must hold exactly `tokens` tokens with that hash (a truncated or
altered shard is refused when opened). Shards are read with `np.memmap`, so opening one costs no memory.

A prepared source folder (`OUT/<source>/`) holds its shards and `done.json`, which describes it on its own
(`open_source`): the tokenizer's fingerprint, vocabulary size and EOS id, the format, whether it has masks,
and per split its documents, tokens and number of shards. `OUT/manifest.json` lists the sources
(`list_sources`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import atomic_path

FORMAT = "nemotron-elastic-shard-v1"
PREPARED_FORMAT = "nemotron-elastic-prepared-v1"  # of done.json and manifest.json


def _write(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65,536), else uint32."""
    if not 0 < vocab_size <= 2**32:
        raise ValueError(f"vocab_size must be in [1, 2**32], got {vocab_size}")
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def write_shard(path: Path, documents: list[list[int]], vocab_size: int, eos_token_id: int,
                masks: list[np.ndarray] | None = None) -> dict:
    """Write one shard (`path` without suffix) holding `documents` (token ids, EOS appended to each), and with
    `masks` (one (len(ids),) uint8 array per document) its `.mask`; returns its index. Nothing is visible under
    the final names until every file is complete."""
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
    _write(path.with_suffix(".bin"), data)
    if masks is not None:
        if len(masks) != len(documents) or any(len(m) != len(ids) for m, ids in zip(masks, documents)):
            raise ValueError(f"{path}: the masks do not match the documents' tokens")
        zero = np.zeros(1, dtype=np.uint8)  # the EOS is never the assistant's
        parts = [part for m in masks for part in (np.asarray(m, dtype=np.uint8), zero)]
        bits = np.concatenate(parts).tobytes() if parts else b""
        _write(path.with_suffix(".mask"), bits)
        index["mask_sha256"] = hashlib.sha256(bits).hexdigest()
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


def _checked_file(path: Path, size: int, sha256: str, verify: bool) -> None:
    if not path.is_file():
        raise ValueError(f"{path}: missing (the index says {size} bytes)")
    found = path.stat().st_size
    if found != size:
        raise ValueError(f"{path}: {found} bytes, the index says {size}: truncated or altered")
    if verify and _sha256(path) != sha256:
        raise ValueError(f"{path}: its bytes do not match the index's sha256: altered")


class Shard:
    """An opened shard: `tokens` (np.memmap of (tokens,)), `ends` (document end offsets, read on demand) and `mask` (np.memmap
    uint8 of (tokens,), 1 = an assistant token; None for a shard without one, i.e. of a text source).

    Raises:
        ValueError: no index, a malformed index, or a `.bin` / `.mask` whose size (or, with `verify`, hash)
            does not match it.
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
        _checked_file(binary, count * dtype.itemsize, index["sha256"], verify)
        # Only the count stays in memory: a 110B-token corpus has ~50M documents, whose offsets as Python ints
        # would cost every rank gigabytes; training never needs them (`ends` re-reads the index).
        self.num_documents = len(ends)
        little = dtype.newbyteorder("<")
        self.tokens = np.memmap(binary, dtype=little, mode="r", shape=(count,)) if count else np.zeros(0, little)
        self.mask: np.ndarray | None = None
        if "mask_sha256" in index:
            mask = self.path.with_suffix(".mask")
            _checked_file(mask, count, index["mask_sha256"], verify)
            self.mask = np.memmap(mask, dtype=np.uint8, mode="r", shape=(count,)) if count else np.zeros(0, np.uint8)

    @property
    def ends(self) -> list[int]:
        """Document end offsets, in tokens (read from the index on each call)."""
        return list(json.loads(self.path.with_suffix(".idx").read_text())["documents"])

    def document(self, i: int) -> np.ndarray:
        """Document i's tokens, with its EOS."""
        ends = self.ends
        start = ends[i - 1] if i else 0
        return np.asarray(self.tokens[start : ends[i]])

    def __len__(self) -> int:
        return self.num_documents


@dataclass
class PreparedSource:
    """A prepared source folder, opened: its description from done.json and its shards per split."""

    path: Path
    name: str
    tokenizer: str  # the fingerprint (data/tokenizer.py `tokenizer_hash`) it was prepared with
    vocab_size: int
    eos_token_id: int
    format: str  # "text" or "messages"
    mask: bool  # every shard has a `.mask` (a messages source)
    train: list[Shard] = field(default_factory=list)
    heldout: list[Shard] = field(default_factory=list)


def open_source(path: str | Path, verify: bool = False) -> PreparedSource:
    """Open a prepared source folder (`OUT/<source>`, not OUT itself).

    Args:
        path: the folder.
        verify: also check every `.bin` / `.mask` against its SHA-256 (reads every byte); sizes are always
            checked.

    Raises:
        ValueError: one line: not a prepared (or an unfinished) source folder, a missing, truncated or altered
            shard, or shards that disagree with done.json.
    """
    path = Path(path)
    try:
        done = json.loads((path / "done.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: not prepared (run nemotron-elastic prepare) or unfinished (no done.json)") from None
    except ValueError as e:
        raise ValueError(f"{path / 'done.json'}: malformed ({e})") from None
    if not isinstance(done, dict) or done.get("prepared_format") != PREPARED_FORMAT:
        raise ValueError(f"{path / 'done.json'}: not a {PREPARED_FORMAT} source (prepare it again)")
    try:
        source = PreparedSource(path, done["name"], done["tokenizer"], int(done["vocab_size"]),
                                int(done["eos_token_id"]), done["format"], bool(done["mask"]))
        counts = {split: (int(done[split]["shards"]), int(done[split]["documents"])) for split in ("train", "heldout")}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path / 'done.json'}: malformed ({type(e).__name__}: {e})") from None
    for split, (shards, documents) in counts.items():
        opened = [Shard(path / f"{split}-{i:05d}", verify=verify) for i in range(shards)]
        if sum(len(s) for s in opened) != documents:
            raise ValueError(f"{path}: the {split} shards hold {sum(len(s) for s in opened)} documents, done.json "
                             f"says {documents}")
        wrong = [s.path for s in opened if (s.mask is None) == source.mask]
        if wrong:
            have = "no .mask, done.json says the source has masks" if source.mask else "a .mask, done.json says none"
            raise ValueError(f"{wrong[0]}: {have}")
        setattr(source, split, opened)
    return source


def list_sources(out: str | Path) -> list[str]:
    """The names of the sources `prepare` wrote to `out`, from its manifest.json; open each with
    `open_source(Path(out) / name)`.

    Raises:
        ValueError: no (or a malformed) manifest.json: not a finished prepare output.
    """
    manifest = Path(out) / "manifest.json"
    try:
        return list(json.loads(manifest.read_text(encoding="utf-8"))["sources"])
    except FileNotFoundError:
        raise ValueError(f"{out}: no manifest.json (not a prepare output, or unfinished)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{manifest}: malformed ({type(e).__name__}: {e})") from None
