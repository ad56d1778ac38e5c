# SPDX-License-Identifier: Apache-2.0
"""BatchCache: the decoding state of a batch of independent sequences (rows), each at its own length.

`HybridLM.forward(input_ids, cache=batch_cache, counts=counts)` feeds every row `counts[b]` new tokens
(input right-padded to T = max(counts)); row b's tokens take positions lengths[b] .. lengths[b] + counts[b]
- 1. The result at a row's valid positions equals that row run alone (docs/SERVING.md, batched decoding):

- attention: the new keys / values are written at the row's own positions; a (B, 1, T, S) mask lets query j
  of row b see keys 0 .. lengths[b] + j (and only the last `window` of them for a sliding window);
- Mamba2: padded positions get dt = 0, which leaves the SSM state exactly as it was (no decay, no input),
  and the conv state keeps each row's own last K-1 valid inputs.

Rows join and leave between steps: `take(rows)` / `drop(rows)` keep some rows, `concat(caches)` stacks
caches of one sub-model. The KV storage has two kinds (`KV_KINDS`, model/kv_store.py): `padded` (one
tensor per layer, capacity grown by doubling) and `paged` (blocks of PAGE tokens in a pool shared by the
caches of one sub-model; memory follows each row's length).

Shapes: B rows, T new tokens per row (padded), S = max(lengths + counts), Hkv KV heads, hd head dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config.spec import SubnetSpec
from .decode import MambaState
from .kv_store import PAGE, PaddedKV, PagedKV, PagePool, RowStep
from .layout import Kept, Select
from .masks import ElasticMasks

KV_KINDS = ("padded", "paged")


@dataclass
class KVRows:
    """An attention layer's batched state for one step: its storage and the step."""

    kv: PaddedKV | PagedKV
    step: RowStep


@dataclass
class MambaRows:
    """A Mamba2 layer's batched state for one step: per-row conv / SSM states (None: not run yet, zeros)
    and the step."""

    state: MambaState | None
    step: RowStep


class BatchCache:
    """The decoding state of B rows under one sub-model: per-row lengths, per layer a PaddedKV (padded kind)
    or a MambaState (B rows), and for the paged kind one block table into a PagePool.

    Args:
        num_layers: the parent's layer count.
        kind: "padded" or "paged" (KV_KINDS).
        pool: paged kind: the sub-model's PagePool, shared by every cache whose rows may be concatenated
            (default: a new one).
        device: where lengths and the block table live (the model's device).
    """

    def __init__(self, num_layers: int, kind: str = "padded", pool: PagePool | None = None, device=None) -> None:
        if kind not in KV_KINDS:
            raise ValueError(f"kv cache kind: expected one of {', '.join(KV_KINDS)}, got {kind!r}")
        self.kind = kind
        self.lengths = torch.zeros(0, dtype=torch.long, device=device)  # (B,)
        self.layers: list[PaddedKV | MambaState | None] = [None] * num_layers
        self.pool = (pool or PagePool()) if kind == "paged" else None
        self.table = torch.zeros(0, 0, dtype=torch.long, device=device)  # (B, max_blocks), paged only

    @classmethod
    def empty_rows(cls, num_layers: int, rows: int, kind: str = "padded", pool: PagePool | None = None,
                   device=None) -> BatchCache:
        """A cache of `rows` sequences that have seen no token yet."""
        cache = cls(num_layers, kind, pool, device)
        cache.lengths = torch.zeros(rows, dtype=torch.long, device=device)
        cache.table = torch.zeros(rows, 0, dtype=torch.long, device=device)
        return cache

    @property
    def rows(self) -> int:
        return int(self.lengths.shape[0])

    def begin(self, counts: torch.Tensor, width: int, pack: bool = False) -> RowStep:
        """The step feeding `counts` (B,) new tokens per row in an input of width T (paged: blocks reserved);
        `pack`: a ragged step runs its token-wise layers on the real tokens only (`RowStep.packed`)."""
        counts = counts.to(device=self.lengths.device, dtype=torch.long)
        if counts.shape != self.lengths.shape:
            raise ValueError(f"counts: expected {tuple(self.lengths.shape)} (one per row), got {tuple(counts.shape)}")
        low, high = (int(counts.min()), int(counts.max())) if counts.numel() else (width, 0)
        if low < 0 or high > width:
            raise ValueError(f"counts: every row feeds 0 .. {width} tokens, got {counts.tolist()}")
        if self.kind == "paged":
            self._reserve(self.lengths + counts)
        return RowStep(self.lengths.clone(), counts, width, packed=pack and low < width)  # padding exists

    def advance(self, step: RowStep) -> None:
        """Count the step's tokens as seen (called by the forward after every layer ran)."""
        self.lengths = step.starts + step.counts

    def _reserve(self, after: torch.Tensor) -> None:
        need = ((after + PAGE - 1) // PAGE).tolist()
        width = max(need, default=0)
        if width > self.table.shape[1]:
            pad = self.table.new_zeros(self.table.shape[0], width - self.table.shape[1])
            self.table = torch.cat([self.table, pad], dim=1)
        have = (self.table != 0).sum(dim=1).tolist()
        for row, (n, h) in enumerate(zip(need, have)):
            for i in range(h, n):  # a row's blocks are always a prefix of its table row
                self.table[row, i] = self.pool.allocate()

    def rows_state(self, index: int, block_type: str, step: RowStep) -> KVRows | MambaRows | None:
        """Layer `index`'s batched state for a step, by block type: KV storage ('*'), per-row Mamba states
        ('M'), None for MLP blocks."""
        if block_type == "*":
            return KVRows(self.kv(index), step)
        return MambaRows(self.layers[index], step) if block_type == "M" else None

    def kv(self, index: int) -> PaddedKV | PagedKV:
        """Attention layer `index`'s storage."""
        if self.kind == "paged":
            return PagedKV(self.pool, index, self.table)
        if self.layers[index] is None:
            self.layers[index] = PaddedKV()
        return self.layers[index]

    def take(self, rows: list[int]) -> BatchCache:
        """A cache of rows `rows` (in that order), sharing nothing that a later step writes in place. This
        cache stays valid; its paged blocks are shared with the result (hand each row on to one cache only)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.lengths.device)
        out = BatchCache(len(self.layers), self.kind, self.pool, self.lengths.device)
        out.lengths = self.lengths[index]
        longest = int(out.lengths.max()) if rows else 0
        for i, state in enumerate(self.layers):
            if isinstance(state, PaddedKV):
                out.layers[i] = PaddedKV() if state.k is None else state.select(index, longest)
            elif isinstance(state, MambaState):
                out.layers[i] = MambaState(state.conv[index], state.ssm[index])
        if self.kind == "paged":
            out.table = self.table[index]
        return out

    def drop(self, rows: list[int]) -> BatchCache:
        """This cache without rows `rows` (finished or cancelled): their paged blocks return to the pool.
        This cache is consumed."""
        gone = set(rows)
        if self.kind == "paged":
            for row in gone:
                self.pool.release(self.table[row].tolist())
        return self.take([r for r in range(self.rows) if r not in gone])

    @staticmethod
    def concat(parts: list[BatchCache]) -> BatchCache:
        """The rows of every part, in order (parts of one sub-model; paged: of one pool). Parts are consumed."""
        parts = [p for p in parts if p.rows] or parts[:1]
        first = parts[0]
        if any(p.kind != first.kind or p.pool is not first.pool for p in parts):
            raise ValueError("BatchCache.concat: the caches differ in kind or page pool")
        out = BatchCache(len(first.layers), first.kind, first.pool, first.lengths.device)
        out.lengths = torch.cat([p.lengths for p in parts])
        for i in range(len(first.layers)):
            states = [p.layers[i] for p in parts]
            ran = [s for s in states if not _unrun(s)]
            if not ran:
                continue
            # rows that have seen no token yet start from zero states (a cache of fresh rows joins a run one)
            states = [_zeros_like(ran[0], p) if _unrun(s) else s for s, p in zip(states, parts)]
            if isinstance(states[0], PaddedKV):
                out.layers[i] = PaddedKV.concat(states)
            else:
                out.layers[i] = MambaState(torch.cat([s.conv for s in states]), torch.cat([s.ssm for s in states]))
        if first.kind == "paged":
            width = max(p.table.shape[1] for p in parts)
            out.table = torch.cat([F.pad(p.table, (0, width - p.table.shape[1])) for p in parts])
        return out

    def row_bytes(self, row: int) -> int:
        """Bytes of row `row`'s own state: its KV at its length (no padding or block rounding) and its Mamba
        conv / SSM states; what `subnet.cost.predicted_cache_bytes` predicts for one sequence."""
        total, length = 0, int(self.lengths[row])
        for i, state in enumerate(self.layers):
            if isinstance(state, MambaState):
                total += state.conv[row].numel() * state.conv.element_size()
                total += state.ssm[row].numel() * state.ssm.element_size()
            elif isinstance(state, PaddedKV) and state.k is not None:
                total += 2 * state.k.shape[1] * length * state.k.shape[3] * state.k.element_size()
            elif self.kind == "paged" and i in self.pool.k:
                k = self.pool.k[i]
                total += 2 * k.shape[1] * length * k.shape[3] * k.element_size()
        return total

    def nbytes(self) -> int:
        """Bytes this cache holds: padded KV, Mamba states, and for the paged kind its rows' blocks."""
        total = 0
        for state in self.layers:
            if isinstance(state, PaddedKV):
                total += state.nbytes()
            elif isinstance(state, MambaState):
                total += state.conv.numel() * state.conv.element_size() + state.ssm.numel() * state.ssm.element_size()
        if self.kind == "paged" and self.pool.size > 1:
            per_block = self.pool.nbytes() // max(1, next(iter(self.pool.k.values()), torch.empty(1)).shape[0])
            total += int((self.table != 0).sum()) * per_block
        return total


def _unrun(state: PaddedKV | MambaState | None) -> bool:
    return state is None or (isinstance(state, PaddedKV) and state.k is None)


def _zeros_like(template: PaddedKV | MambaState, part: BatchCache) -> PaddedKV | MambaState:
    """The state of `part`'s rows before their first token, shaped like `template` (a run layer's state)."""
    if part.rows and int(part.lengths.max()) > 0:
        raise ValueError("BatchCache.concat: a part has seen tokens but not in every layer (another sub-model?)")
    b = part.rows
    if isinstance(template, PaddedKV):
        k = template.k.new_zeros(b, template.k.shape[1], 0, template.k.shape[3])
        return PaddedKV(k, k)
    return MambaState(template.conv.new_zeros(b, *template.conv.shape[1:]),
                      template.ssm.new_zeros(b, *template.ssm.shape[1:]))


# --- relayout: a `widest` batch (model/batcher.py) runs each step sliced to the union of its rows'
# sub-models, its caches laid out for that union; when the union changes, the state is re-indexed in place.
# Mamba2 conv / SSM states keep each kept head / head channel's values, units the new layout adds start at
# zero (the rows already there never read them: their masks are 0 there) and units it drops go. KV is the
# same under every layout (KV heads and head_dim are never cut). A layer the new layout drops loses its
# state; a layer it adds starts empty (zeros), which the rows already there never read (depth gate 0).


def _index(sel: Select, device) -> torch.Tensor:
    if isinstance(sel, Kept):
        return sel.index
    return torch.arange(sel, device=device) if isinstance(sel, int) else sel


def _move(t: torch.Tensor, dim: int, full: int, src: Select, dst: Select) -> torch.Tensor:
    """t's slices along `dim` at parent indices `src` -> the slices at parent indices `dst` (zeros where
    `src` has none)."""
    shape = list(t.shape)
    shape[dim] = full
    wide = t.new_zeros(shape).index_copy(dim, _index(src, t.device), t)
    return wide.index_select(dim, _index(dst, t.device))


def relayout(cache: BatchCache, model: torch.nn.Module, old: SubnetSpec, new: SubnetSpec) -> None:
    """Re-index `cache` (laid out for sub-model `old`) in place for sub-model `new` (same parent)."""
    if old == new:
        return
    old_m, new_m = ElasticMasks.from_spec(old), ElasticMasks.from_spec(new)
    for i, block in enumerate(model.layers):
        state = cache.layers[i]
        if i not in new.layers:
            cache.layers[i] = None
            continue
        if not isinstance(state, MambaState) or i not in old.layers:
            continue
        mixer = block.mixer
        src = mixer._layout(old_m.layers[i].width, old_m.mamba_head_dim, state.ssm.device)
        dst = mixer._layout(new_m.layers[i].width, new_m.mamba_head_dim, state.ssm.device)
        conv = _move(state.conv, 1, mixer.conv_dim, src.sel.conv, dst.sel.conv)  # (B, C, K-1)
        ssm = _move(state.ssm, 1, mixer.num_heads, src.sel.heads, dst.sel.heads)  # (B, h, c_old, N)
        if dst.head_dim > src.head_dim:
            ssm = torch.nn.functional.pad(ssm, (0, 0, 0, dst.head_dim - src.head_dim))
        cache.layers[i] = MambaState(conv, ssm[:, :, : dst.head_dim].contiguous())
