# SPDX-License-Identifier: Apache-2.0
"""Training and evaluation windows from prepared token shards, blended over sources by weight.

    TokenStream      one source split's shards as one memory-mapped stream of tokens (and assistant masks)
    SourceWindows    a stream cut into (seq_len + 1)-token windows: per epoch a random offset and order
    BlendDataset     the global stream of training windows: each window's source chosen by weight
    eval_windows     sequential, non-overlapping held-out windows

Packing: documents are already concatenated with an EOS after each (`data/shards.py`), so a window may
span documents, as in nanoGPT and Megatron. Windows overlap by one token (the last target is the next
window's first input).

The blend (docs/DESIGN.md 3.10). Global window i goes to the source s with the largest deficit
`w_s (i + 1) - c_s` (c_s: windows that source has had so far; ties go to the first source), the
deterministic interleaving of Megatron's blended datasets: after n windows every source has had its share
to within one window, so proportions are exact, not sampled. Source s's c-th window is its own epoch
`c // W_s`'s window `order[c % W_s]`, from a generator seeded with (seed, epoch[, s]) alone. The whole
position is (i, c_1 .. c_S): a checkpoint holds it and a resumed run continues the same stream.

World size. A step's micro-batch takes windows [i, i + batch x world) of the global stream and rank r keeps
its r-th `batch` of them; every rank walks the whole global stream (choosing a source per window costs a few
operations), so the stream is the same on any number of processes. A blend of one source reads exactly the
windows of the single packed token file that training read before blends (hence no salt for source 0), so
runs measured then (`make demo`, docs/RESULTS.md) read the same data now.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Batch:
    """A micro-batch: tokens (B, T + 1) int64 (inputs `[:, :-1]`, targets `[:, 1:]`); loss_mask (B, T) bool
    of the targets the loss counts (None: all)."""

    tokens: torch.Tensor
    loss_mask: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        mask = None if self.loss_mask is None else self.loss_mask.to(device)
        return Batch(self.tokens.to(device), mask)


class TokenStream:
    """Token arrays (one per shard, e.g. `Shard.tokens` memmaps) read as one stream.

    Args:
        name: the source's name (for messages and the resume state).
        tokens: the shards' token arrays, in order; empty ones are skipped.
        masks: one assistant mask per shard (uint8, same lengths), or None (a text source: no masks).
        fingerprint: identifies the data (the resume state checks it).
    """

    def __init__(self, name: str, tokens: Sequence[np.ndarray], masks: Sequence[np.ndarray] | None = None,
                 fingerprint: str = ""):
        keep = [i for i, t in enumerate(tokens) if len(t)]
        self.name, self.fingerprint = name, fingerprint
        self.parts = [tokens[i] for i in keep]
        self.masks = None if masks is None else [masks[i] for i in keep]
        if self.masks is not None and any(len(m) != len(t) for m, t in zip(self.masks, self.parts)):
            raise ValueError(f"{name}: a mask does not match its shard's length")
        self.ends = np.cumsum([len(t) for t in self.parts], dtype=np.int64)

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def _read(self, arrays: list[np.ndarray], start: int, stop: int) -> np.ndarray:
        """Elements [start, stop) of the concatenated arrays (copied; a window rarely spans two shards)."""
        first = int(np.searchsorted(self.ends, start, side="right"))
        out, pos = [], start
        for i in range(first, len(arrays)):
            base = int(self.ends[i - 1]) if i else 0
            out.append(np.asarray(arrays[i][pos - base : min(stop, int(self.ends[i])) - base]))
            pos = int(self.ends[i])
            if pos >= stop:
                break
        return out[0] if len(out) == 1 else np.concatenate(out)

    def tokens(self, start: int, stop: int) -> np.ndarray:
        return self._read(self.parts, start, stop)

    def mask(self, start: int, stop: int) -> np.ndarray | None:
        """The assistant mask of tokens [start, stop) (None for a source without masks)."""
        return None if self.masks is None else self._read(self.masks, start, stop)


class SourceWindows:
    """A stream's training windows: epoch e starts at a random offset < seq_len and visits the windows in a
    random order, both from (seed, e[, salt]) alone, so window c of the endless sequence is computed, not
    stored."""

    def __init__(self, stream: TokenStream, seq_len: int, seed: int, salt: int = 0):
        n = len(stream)
        if n < seq_len + 1:
            raise ValueError(f"{stream.name}: {n} training tokens, fewer than one window of seq_len + 1 = {seq_len + 1}")
        self.stream, self.seq_len, self.seed, self.salt = stream, seq_len, seed, salt
        # Offsets stay below both seq_len and the slack n - seq_len - 1, so a fixed window count fits after any.
        self.max_offset = min(seq_len - 1, n - seq_len - 1)
        self.num_windows = (n - 1 - self.max_offset) // seq_len
        self._epochs: dict[int, tuple[int, np.ndarray]] = {}

    def _epoch(self, epoch: int) -> tuple[int, np.ndarray]:
        """(offset, window order) of one epoch; the last two are cached (a batch may span two)."""
        if epoch not in self._epochs:
            key = [self.seed, epoch] + ([self.salt] if self.salt else [])
            rng = np.random.default_rng(key)
            offset = int(rng.integers(self.max_offset + 1))
            self._epochs = {e: v for e, v in self._epochs.items() if e == epoch - 1}
            self._epochs[epoch] = (offset, rng.permutation(self.num_windows))
        return self._epochs[epoch]

    def start(self, count: int) -> int:
        """Token offset of the source's window number `count` (over all epochs)."""
        offset, order = self._epoch(count // self.num_windows)
        return offset + int(order[count % self.num_windows]) * self.seq_len


class BlendDataset:
    """Endless (batch, seq_len + 1) training batches of a weighted blend (module docstring).

    Args:
        streams: the sources' training streams.
        weights: one positive weight per source (normalised here).
        seq_len, batch_size: tokens per input row, rows per batch on this rank.
        seed: fixes every source's epochs (the loop uses the run seed + the stage index).
        rank, world_size: this rank's slice of each global micro-batch.
        masked: return `Batch.loss_mask` (sources without masks count every token).
    """

    def __init__(self, streams: Sequence[TokenStream], weights: Sequence[float], seq_len: int, batch_size: int,
                 seed: int = 0, rank: int = 0, world_size: int = 1, masked: bool = False):
        if len(streams) != len(weights) or not streams:
            raise ValueError(f"{len(weights)} weights for {len(streams)} sources")
        if any(not w > 0 for w in weights):
            raise ValueError(f"blend weights must be positive, got {list(weights)}")
        if seq_len < 1 or batch_size < 1:
            raise ValueError(f"seq_len and batch_size must be >= 1, got {seq_len} and {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        total = float(sum(weights))
        self.weights = np.array([w / total for w in weights])
        self.sources = [SourceWindows(s, seq_len, seed, salt=i) for i, s in enumerate(streams)]
        self.seq_len, self.batch_size, self.seed, self.masked = seq_len, batch_size, seed, masked
        self.rank, self.world_size = rank, world_size
        self.samples = 0  # windows of the global stream consumed by all ranks together
        self.counts = np.zeros(len(streams), dtype=np.int64)  # of them, per source

    def _choose(self) -> int:
        """The source of global window `samples` (largest deficit; ties to the first)."""
        return int(np.argmax(self.weights * (self.samples + 1) - self.counts))

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        """The next batch of this rank: tokens (batch_size, seq_len + 1) int64, loss_mask (batch_size, seq_len)."""
        mine = range(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        rows, masks = [], []
        for j in range(self.batch_size * self.world_size):
            s = self._choose()
            if j in mine:
                src = self.sources[s]
                start = src.start(int(self.counts[s]))
                rows.append(src.stream.tokens(start, start + self.seq_len + 1))
                if self.masked:
                    m = src.stream.mask(start + 1, start + self.seq_len + 1)  # the targets' tokens
                    masks.append(np.ones(self.seq_len, dtype=bool) if m is None else m.astype(bool))
            self.counts[s] += 1
            self.samples += 1
        tokens = torch.from_numpy(np.stack(rows).astype(np.int64))
        return Batch(tokens, torch.from_numpy(np.stack(masks)) if self.masked else None)

    @property
    def shares(self) -> np.ndarray:
        """Each source's share of the windows read so far."""
        return self.counts / max(1, self.samples)

    def state_dict(self) -> dict[str, Any]:
        """The resume position, with what identifies the stream it belongs to."""
        return {"samples": self.samples, "counts": [int(c) for c in self.counts], "seed": self.seed,
                "seq_len": self.seq_len, "weights": [float(w) for w in self.weights],
                "sources": [{"name": s.stream.name, "tokens": len(s.stream), "fingerprint": s.stream.fingerprint}
                            for s in self.sources]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state`; the position counts windows, so batch size and world size may change."""
        mine = self.state_dict()
        for key in ("seed", "seq_len", "weights", "sources"):
            if state.get(key) != mine[key]:
                raise ValueError(f"data state is for another stream: {key} {state.get(key)!r} != {mine[key]!r}")
        self.samples, self.counts = int(state["samples"]), np.array(state["counts"], dtype=np.int64)


def eval_windows(stream: TokenStream, seq_len: int, batch_size: int, max_windows: int | None = None,
                 masked: bool = False) -> Iterator[Batch]:
    """Sequential, non-overlapping evaluation windows: every token but the first is a target once.

    Yields:
        Batches of (batch_size, seq_len + 1) tokens; the last full batch may have fewer rows, and a final
        shorter tail window comes alone, as (1, tail_len + 1).
    """
    if seq_len < 1 or batch_size < 1:
        raise ValueError(f"seq_len and batch_size must be >= 1, got {seq_len} and {batch_size}")
    n = len(stream)
    starts = range(0, n - 1, seq_len)[:max_windows]
    full = [s for s in starts if s + seq_len + 1 <= n]
    tail = [starts[-1]] if len(full) < len(starts) else []
    groups = [full[i : i + batch_size] for i in range(0, len(full), batch_size)] + [tail] * bool(tail)
    for group in groups:
        stop = [min(s + seq_len + 1, n) for s in group]
        tokens = np.stack([stream.tokens(s, e) for s, e in zip(group, stop)]).astype(np.int64)
        mask = None
        if masked:
            parts = [stream.mask(s + 1, e) for s, e in zip(group, stop)]
            mask = torch.from_numpy(np.stack([np.ones(e - s - 1, bool) if m is None else m.astype(bool)
                                              for m, s, e in zip(parts, group, stop)]))
        yield Batch(torch.from_numpy(tokens), mask)
