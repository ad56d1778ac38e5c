# SPDX-License-Identifier: Apache-2.0
"""Packed token files: documents tokenized once into a memory-mapped array, and the batches read from it.

On disk (as in nanoGPT's `train.bin`):

    NAME.bin    every document's tokens, each followed by EOS, as raw little-endian uint16 (a vocabulary
                of at most 65,536 tokens) or uint32; read with `np.memmap`, so only the windows of the
                current batch are ever in RAM
    NAME.json   the sidecar: format, vocab_size, dtype, num_tokens, num_documents, eos_token_id,
                tokenizer_hash, source

Both are written under temporary names and renamed into place, the sidecar last (it is the mark of a
finished file). `pack_documents` reuses an existing file whose tokenizer hash and source fingerprint
match, instead of tokenizing again.

Training batches (`PackedDataset`) are (batch, seq_len + 1) windows: inputs are `[:, :-1]`, targets
`[:, 1:]`. Epoch e cuts the token stream at `offset_e + i * seq_len` (windows overlap by the one token
that is both the last target and the next input), with a random `offset_e < seq_len`, so every epoch
sees different cuts, and visits the windows in a random order; both come from `seed` and `e` alone.
The epochs form one endless stream of windows, and the position in it is one integer, so
`state_dict()` / `load_state_dict()` resume exactly. `eval_batches` reads non-overlapping windows in
order, so every token but the first is a target exactly once.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_path
from .tokenizer import encode_batch, tokenizer_hash

FORMAT = "nemotron-elastic-packed-tokens-v1"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65,536), else uint32."""
    if not 0 < vocab_size <= 2**32:
        raise ValueError(f"vocab_size must be in [1, 2**32], got {vocab_size}")
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def fingerprint_documents(documents: Iterable[str]) -> str:
    """SHA-256 of the documents (length-prefixed, so boundaries count): the default `source` of a pack."""
    digest = hashlib.sha256()
    for doc in documents:
        data = doc.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return "sha256:" + digest.hexdigest()[:32]


@dataclass(frozen=True)
class PackedMeta:
    """The sidecar of a packed token file."""

    vocab_size: int
    dtype: str
    num_tokens: int
    num_documents: int
    eos_token_id: int
    tokenizer_hash: str
    source: str
    format: str = FORMAT


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


class PackedTokens:
    """An opened packed token file: `tokens` is a read-only `np.memmap` of shape (num_tokens,).

    Args:
        path: the `.bin` file (its sidecar is the same name with `.json`).

    Raises:
        ValueError: the sidecar is missing or malformed, or the token file's size does not match it.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        sidecar = _sidecar(self.path)
        try:
            fields = json.loads(sidecar.read_text(encoding="utf-8"))
            self.meta = PackedMeta(**fields)
        except FileNotFoundError:
            raise ValueError(f"{self.path}: not a packed token file (no {sidecar.name})") from None
        except (ValueError, TypeError) as e:
            raise ValueError(f"{sidecar}: malformed packed-token sidecar ({e})") from None
        if self.meta.format != FORMAT or self.meta.dtype not in ("uint16", "uint32"):
            raise ValueError(
                f"{sidecar}: unsupported format {self.meta.format!r} / dtype {self.meta.dtype!r}"
            )
        expected = self.meta.num_tokens * np.dtype(self.meta.dtype).itemsize
        size = self.path.stat().st_size if self.path.is_file() else -1
        if size != expected or self.meta.num_tokens < 1:
            raise ValueError(f"{self.path}: {size} bytes, the sidecar says {expected}: corrupt or incomplete")
        dtype = np.dtype(self.meta.dtype).newbyteorder("<")
        self.tokens = np.memmap(self.path, dtype=dtype, mode="r", shape=(self.meta.num_tokens,))

    def __len__(self) -> int:
        return self.meta.num_tokens


def pack_documents(
    documents: Iterable[str],
    tokenizer: Any,
    path: str | Path,
    source: str | None = None,
    batch_size: int = 256,
    progress: bool = True,
    eos_token_id: int | None = None,
) -> PackedTokens:
    """Tokenize documents into a packed token file, or reuse the one at `path` if it matches.

    Args:
        documents: the texts; empty ones are skipped. Streamed, unless `source` is None.
        tokenizer: a transformers tokenizer with an EOS token.
        path: the `.bin` file to write (the sidecar goes beside it).
        source: a fingerprint of the documents; None computes `fingerprint_documents` (which reads the
            documents into a list first). A file with the same source and tokenizer hash is reused.
        batch_size: documents per tokenizer call.
        progress: show a tqdm progress bar.
        eos_token_id: the separator after each document; default: the tokenizer's EOS (for SmolLM2-Instruct
            that is `<|im_end|>`; its pretraining separator `<|endoftext|>` is id 0).

    Returns:
        The packed file, opened.
    """
    from tqdm.auto import tqdm

    path = Path(path)
    if path.suffix == ".json":
        raise ValueError(f"{path}: the token file must not end in .json (that name is its sidecar's)")
    eos_token_id = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    if eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token to put between documents (pass eos_token_id)")
    if source is None:
        documents = documents if isinstance(documents, Sequence) else list(documents)
        source = fingerprint_documents(documents)
    tok_hash, vocab_size = tokenizer_hash(tokenizer), len(tokenizer)
    if _sidecar(path).is_file():
        with contextlib.suppress(ValueError):  # a corrupt or stale file is rebuilt below
            existing = PackedTokens(path)
            meta = existing.meta
            if (meta.tokenizer_hash, meta.source, meta.eos_token_id) == (tok_hash, source, eos_token_id):
                return existing
    dtype, eos = token_dtype(vocab_size), np.array([eos_token_id])
    path.parent.mkdir(parents=True, exist_ok=True)
    num_tokens = num_documents = 0
    total = len(documents) if isinstance(documents, Sequence) else None
    # Both files under temporary names, renamed when complete: the sidecar out first and in last, so a crash in
    # between leaves no sidecar, never a stale one.
    with atomic_path(_sidecar(path)) as tmp_json, atomic_path(path) as tmp_bin:
        with (
            open(tmp_bin, "wb") as f,
            tqdm(total=total, unit="doc", desc="tokenize", disable=not progress) as bar,
        ):
            iterator = iter(documents)
            while batch := list(itertools.islice(iterator, batch_size)):
                texts = [t for t in batch if t]
                ids = [np.asarray(x, dtype=np.int64) for x in encode_batch(tokenizer, texts)] if texts else []
                if ids:
                    flat = np.concatenate([part for x in ids for part in (x, eos)])
                    if flat.min() < 0 or flat.max() >= vocab_size:
                        raise ValueError(
                            f"tokenizer produced id {int(flat.max())} >= len(tokenizer) = {vocab_size}"
                        )
                    flat.astype(dtype.newbyteorder("<")).tofile(f)  # little-endian on any machine
                    num_tokens, num_documents = num_tokens + flat.size, num_documents + len(ids)
                bar.update(len(batch))
            f.flush()
            os.fsync(f.fileno())
        if num_documents == 0:
            raise ValueError("no documents to pack (every document is empty)")
        meta = PackedMeta(vocab_size, dtype.name, num_tokens, num_documents, int(eos[0]), tok_hash, source)
        tmp_json.write_text(json.dumps(asdict(meta), indent=2) + "\n", encoding="utf-8")
        _sidecar(path).unlink(missing_ok=True)
    return PackedTokens(path)


def _open(packed: PackedTokens | str | Path) -> PackedTokens:
    return packed if isinstance(packed, PackedTokens) else PackedTokens(packed)


class PackedDataset:
    """Endless, deterministically shuffled (batch, seq_len + 1) training windows from a packed file.

    Args:
        packed: a `PackedTokens` or the path of a packed `.bin` file.
        seq_len: tokens per input row (each window holds seq_len + 1 tokens).
        batch_size: rows per batch on this rank.
        seed: fixes every epoch's offset and order.
        rank, world_size: data parallelism; each step takes batch_size * world_size windows from the
            stream and rank r gets the r-th slice, so together the ranks see each window once per epoch.
    """

    def __init__(
        self,
        packed: PackedTokens | str | Path,
        seq_len: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.packed = _open(packed)
        n = len(self.packed)
        if seq_len < 1 or batch_size < 1:
            raise ValueError(f"seq_len and batch_size must be >= 1, got {seq_len} and {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if n < seq_len + 1:
            raise ValueError(
                f"{self.packed.path}: {n} tokens, fewer than one window of seq_len + 1 = {seq_len + 1}"
            )
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.rank, self.world_size = rank, world_size
        # Offsets stay below both seq_len and the slack n - seq_len - 1, and a fixed window count fits
        # after any of them: offset + (W - 1) * seq_len + seq_len + 1 <= n.
        self._max_offset = min(seq_len - 1, n - seq_len - 1)
        self.num_windows = (n - 1 - self._max_offset) // seq_len
        self.samples = 0  # windows consumed by all ranks together: the whole resume state
        self._epochs: dict[int, tuple[int, np.ndarray]] = {}

    def _epoch(self, epoch: int) -> tuple[int, np.ndarray]:
        """(offset, window order) of one epoch; the last two are cached (a batch may span two)."""
        if epoch not in self._epochs:
            rng = np.random.default_rng([self.seed, epoch])
            offset = int(rng.integers(self._max_offset + 1))
            self._epochs = {e: v for e, v in self._epochs.items() if e == epoch - 1}
            self._epochs[epoch] = (offset, rng.permutation(self.num_windows))
        return self._epochs[epoch]

    @property
    def epoch(self) -> float:
        """Epochs completed so far, fractional."""
        return self.samples / self.num_windows

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        """The next batch, int64 of shape (batch_size, seq_len + 1)."""
        first = self.samples + self.rank * self.batch_size
        rows = []
        for sample in range(first, first + self.batch_size):
            offset, order = self._epoch(sample // self.num_windows)
            start = offset + int(order[sample % self.num_windows]) * self.seq_len
            rows.append(self.packed.tokens[start : start + self.seq_len + 1])
        self.samples += self.batch_size * self.world_size
        return torch.from_numpy(np.stack(rows).astype(np.int64))

    def state_dict(self) -> dict[str, Any]:
        """The resume position, with what identifies the data stream it belongs to."""
        meta = self.packed.meta
        return {
            "samples": self.samples,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "num_tokens": meta.num_tokens,
            "tokenizer_hash": meta.tokenizer_hash,
            "source": meta.source,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state`: the next batches equal those of an uninterrupted run.

        The position counts windows, so a run may resume with another batch size or world size; only
        the data stream itself (file, seed, seq_len) must be the same.
        """
        mine = self.state_dict()
        for key in ("seed", "seq_len", "num_tokens", "tokenizer_hash", "source"):
            if state.get(key) != mine[key]:
                raise ValueError(
                    f"data state is for another stream: {key} {state.get(key)!r} != {mine[key]!r}"
                )
        self.samples = int(state["samples"])


def eval_batches(
    packed: PackedTokens | str | Path, seq_len: int, batch_size: int, max_windows: int | None = None
) -> Iterator[torch.Tensor]:
    """Sequential, non-overlapping evaluation windows: every token but the first is a target once.

    Args:
        packed: a `PackedTokens` or the path of a packed `.bin` file.
        seq_len: targets per window (a window holds seq_len + 1 tokens).
        batch_size: windows per batch.
        max_windows: stop after this many windows (None: the whole file).

    Yields:
        int64 batches of shape (batch_size, seq_len + 1); the last full batch may have fewer rows, and
        a final shorter tail window comes alone, as (1, tail_len + 1).
    """
    tokens = _open(packed).tokens
    if seq_len < 1 or batch_size < 1:
        raise ValueError(f"seq_len and batch_size must be >= 1, got {seq_len} and {batch_size}")
    starts = range(0, len(tokens) - 1, seq_len)[:max_windows]
    full = [s for s in starts if s + seq_len + 1 <= len(tokens)]
    for i in range(0, len(full), batch_size):
        rows = [tokens[s : s + seq_len + 1] for s in full[i : i + batch_size]]
        yield torch.from_numpy(np.stack(rows).astype(np.int64))
    if len(full) < len(starts):
        yield torch.from_numpy(tokens[starts[-1] :].astype(np.int64)[None])
