# SPDX-License-Identifier: Apache-2.0
"""KV storage of a batch of rows (model/batch_cache.py): one padded tensor per layer, or pages.

- `PaddedKV`: k, v (B, Hkv, capacity, hd), capacity grown by doubling; a step reads a prefix view of it.
- `PagedKV` over a `PagePool`: per layer a pool of blocks (num_blocks, Hkv, PAGE, hd) shared by every cache
  of one sub-model, and one block table per row (shared by all attention layers); memory follows each
  row's own length, and a step gathers each row's blocks.

Both write a step's new keys / values at each row's own positions (`RowStep`: what one batched forward feeds,
its per-row positions, validity, write slots and attention masks computed once per step for all layers)
and return (B, Hkv, S, hd).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch

PAGE = 16  # tokens per block of the paged kind (a multiple of 8 keeps gathers aligned)


@dataclass
class RowStep:
    """What one batched forward feeds: starts (B,) positions of each row's first new token (its length so
    far), counts (B,) valid new tokens per row, width T of the right-padded input. Everything derived is
    computed once per step and shared by every layer.

    `packed` steps (ragged ones: a prompt chunk next to one-token decoding rows) run their token-wise layers
    (projections, MLPs, norms, the residual stream) on the N real tokens only, (N, 1, d), and the sequence
    mixers unpack to (B, T, .) around their scan / attention: the padding then costs no weight pass."""

    starts: torch.Tensor
    counts: torch.Tensor
    width: int
    packed: bool = False  # the token-wise layers see only the real tokens (`pack`; set by HybridLM.forward)
    _masks: dict = field(default_factory=dict, repr=False)  # window -> attention mask

    @cached_property
    def positions(self) -> torch.Tensor:
        """(B, T) position of every input slot (padded slots continue past the row's end)."""
        return self.starts[:, None] + torch.arange(self.width, device=self.starts.device)[None, :]

    @cached_property
    def valid(self) -> torch.Tensor:
        """(B, T) bool, True at real (not padded) new tokens."""
        return torch.arange(self.width, device=self.counts.device)[None, :] < self.counts[:, None]

    @cached_property
    def writes(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, cols, slots), each (N,): the input slot (row, col) of every real token and its position."""
        rows, cols = self.valid.nonzero(as_tuple=True)
        return rows, cols, self.starts[rows] + cols

    @cached_property
    def flat(self) -> torch.Tensor:
        """(N,) slot b * T + j of every real token, in row order: the packed order."""
        return self.valid.flatten().nonzero().flatten()

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (N, 1, ...): the real tokens only, in row order, each a row of its own (so that
        per-row masks, taken per token, broadcast over them)."""
        return x.flatten(0, 1).index_select(0, self.flat)[:, None]

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, ...) -> (B, T, ...), zeros at the padded slots."""
        rows, rest = self.counts.shape[0], x.shape[2:]
        out = x.new_zeros(rows * self.width, *rest).index_copy_(0, self.flat, x[:, 0])
        return out.view(rows, self.width, *rest)

    @property
    def ends(self) -> torch.Tensor:
        """(B,) each row's length after this step."""
        return self.starts + self.counts

    @cached_property
    def total(self) -> int:
        """S: keys a step attends over (the longest row after this step)."""
        return int(self.ends.max()) if self.starts.numel() else 0

    def attention_mask(self, window: int | None) -> torch.Tensor:
        """(B, 1, T, S) bool, True where query j of row b may attend to key s: s <= lengths[b] + j, and
        s > lengths[b] + j - window with a sliding window."""
        if window not in self._masks:
            q_pos = self.positions[:, None, :, None]  # (B, 1, T, 1)
            k_pos = torch.arange(self.total, device=self.starts.device)[None, None, None, :]  # (1, 1, 1, S)
            mask = k_pos <= q_pos
            if window is not None:
                mask = mask & (k_pos > q_pos - window)
            self._masks[window] = mask
        return self._masks[window]


class PaddedKV:
    """Keys and values of every row in one tensor each: k, v (B, Hkv, capacity, hd); row b's first
    lengths[b] positions are real."""

    def __init__(self, k: torch.Tensor | None = None, v: torch.Tensor | None = None) -> None:
        self.k, self.v = k, v  # None until the first write (which knows the layer's head sizes)

    def update(self, k_new: torch.Tensor, v_new: torch.Tensor, step: RowStep) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k_new, v_new (B, Hkv, T, hd) at each row's valid positions; return k, v (B, Hkv, S, hd)."""
        need = step.total
        if self.k is None:
            self.k = k_new.new_zeros(k_new.shape[0], k_new.shape[1], 0, k_new.shape[3])
            self.v = self.k
        if need > self.k.shape[2]:  # grow by doubling, so appends cost amortised O(1) copies
            cap = max(need, 2 * self.k.shape[2])
            self.k, self.v = _grow(self.k, cap), _grow(self.v, cap)
        rows, cols, slots = step.writes  # (N,) each
        self.k[rows, :, slots] = k_new[rows, :, cols]  # (N, Hkv, hd)
        self.v[rows, :, slots] = v_new[rows, :, cols]
        return self.k[:, :, :need], self.v[:, :, :need]

    def select(self, rows: torch.Tensor, length: int) -> PaddedKV:
        """Rows `rows` (R,), their first `length` positions (the longest kept row)."""
        return PaddedKV(self.k[rows, :, :length], self.v[rows, :, :length])

    @staticmethod
    def concat(parts: list[PaddedKV]) -> PaddedKV:
        cap = max(p.k.shape[2] for p in parts)
        return PaddedKV(torch.cat([_grow(p.k, cap) for p in parts]), torch.cat([_grow(p.v, cap) for p in parts]))

    def nbytes(self) -> int:
        return 0 if self.k is None else 2 * self.k.numel() * self.k.element_size()


def _grow(t: torch.Tensor, capacity: int) -> torch.Tensor:
    """t (B, H, C, hd) zero-padded along dim 2 to `capacity` (t itself when already that long)."""
    if t.shape[2] == capacity:
        return t
    out = t.new_zeros(t.shape[0], t.shape[1], capacity, t.shape[3])
    out[:, :, : t.shape[2]] = t
    return out


class PagePool:
    """The blocks of every attention layer of one sub-model, shared by all caches holding its rows (so rows
    move between caches by their block tables alone). Per layer: k, v (num_blocks, Hkv, PAGE, hd); block 0
    is a zero block that unused table entries point at; freed blocks are reused first."""

    def __init__(self) -> None:
        self.k: dict[int, torch.Tensor] = {}
        self.v: dict[int, torch.Tensor] = {}
        self.size = 1  # blocks handed out so far, block 0 included
        self.free: list[int] = []

    def allocate(self) -> int:
        if self.free:
            return self.free.pop()
        self.size += 1
        return self.size - 1

    def release(self, blocks: list[int]) -> None:
        self.free.extend(b for b in blocks if b != 0)

    def layer(self, index: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer `index`'s pools with room for every allocated block (created / grown by doubling).
        like: (B, Hkv, T, hd), a tensor of the layer's new keys (dtype, device, head sizes)."""
        k = self.k.get(index)
        if k is None or k.shape[0] < self.size:
            blocks = max(self.size, 2 * (0 if k is None else k.shape[0]))
            shape = (blocks, like.shape[1], PAGE, like.shape[3])
            new_k, new_v = like.new_zeros(shape), like.new_zeros(shape)
            if k is not None:
                new_k[: k.shape[0]], new_v[: k.shape[0]] = k, self.v[index]
            self.k[index], self.v[index] = new_k, new_v
        return self.k[index], self.v[index]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k.values(), *self.v.values()))


class PagedKV:
    """One attention layer's view of a paged cache: the shared pool and the rows' block table
    (B, max_blocks) long."""

    def __init__(self, pool: PagePool, index: int, table: torch.Tensor) -> None:
        self.pool, self.index, self.table = pool, index, table

    def update(self, k_new: torch.Tensor, v_new: torch.Tensor, step: RowStep) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k_new, v_new (B, Hkv, T, hd) into each row's blocks; return k, v (B, Hkv, S, hd)."""
        pool_k, pool_v = self.pool.layer(self.index, k_new)
        rows, cols, slots = step.writes
        block = self.table[rows, slots // PAGE]
        pool_k[block, :, slots % PAGE] = k_new[rows, :, cols]
        pool_v[block, :, slots % PAGE] = v_new[rows, :, cols]
        need = step.total
        used = self.table[:, : -(-need // PAGE)]  # (B, nb)
        return _gather(pool_k, used, need), _gather(pool_v, used, need)


def _gather(pool: torch.Tensor, used: torch.Tensor, need: int) -> torch.Tensor:
    """Rows' blocks laid end to end: pool[used] (B, nb, Hkv, PAGE, hd) -> (B, Hkv, need, hd)."""
    b, nb = used.shape
    out = pool[used].permute(0, 2, 1, 3, 4).reshape(b, pool.shape[1], nb * PAGE, pool.shape[3])
    return out[:, :, :need]
