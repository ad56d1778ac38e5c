# SPDX-License-Identifier: Apache-2.0
"""The tiled weight layout for serving on a CPU: every budget reads exactly its own bytes.

A row-major weight (R, C) gives a sub-model's kept columns (a prefix of the hidden axis, runs of heads) as
a strided piece of every kept row. Reading it costs nearly as much as the whole row: the hardware
prefetcher runs on past the piece's end, so budget 0.5 of the serve_load model read its products in 0.70x
of the parent's time for 0.49x of its bytes (benchmarks/decode_budgets.py `tiled`). Stored in tiles,

    tiles[p, k, t] = weight[p * TILE + t, k]        (P, C, TILE), P = ceil(R / TILE), zero rows past R,

TILE output rows at a time, column-major inside a tile, every kept column of a kept tile is one contiguous
TILE-float line and the kept columns of a prefix are one contiguous block: each budget streams its own
part of one weight copy, whatever its spec (no boundaries fixed in advance, in-between budgets included).
The few-rows kernel reads tiles in place (model/cpu_kernels.py `tiled`); more rows (prefill) take torch's
batched matmul over the kept tiles. Same values as the row-major layer up to float rounding.

Only for inference: `HybridLM.use_tiled_weights()` swaps the blocks' linear weights for tiles (the serving
engine does it for float32 on a CPU with the kernels built), `use_tiled_weights(False)` swaps them back.

    tiles = tile(weight)                                   # (R, C) -> (P, C, TILE)
    weight = untile(tiles, R)                              # and back
    y = linear(x, tiles, bias, row_runs, col_segments)     # x (..., width) -> (..., kept rows)
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from typing import NamedTuple

import torch
from torch import nn

from . import cpu_kernels

TILE = 16  # output rows per tile: one AVX-512 vector (csrc/decode.c `ne_tiled_f32`)

Run = tuple[int, int, int, int]  # (start, length, count, step), as in model/layout.py
Segment = tuple[int, int, int]  # (weight column, x column, length)


def tile(weight: torch.Tensor) -> torch.Tensor:
    """(R, C) -> (P, C, TILE) contiguous, P = ceil(R / TILE); rows past R are zero."""
    r, c = weight.shape
    full, rest = divmod(r, TILE)
    tiles = weight.new_zeros(full + (rest > 0), c, TILE)
    rows = tiles.permute(0, 2, 1)  # (P, TILE, C): tiles seen row-major
    rows[:full].copy_(weight[: full * TILE].view(full, TILE, c))
    if rest:
        rows[full, :rest].copy_(weight[full * TILE :])
    return tiles


def untile(tiles: torch.Tensor, rows: int) -> torch.Tensor:
    """(P, C, TILE) -> the (rows, C) row-major weight, contiguous."""
    return tiles.permute(0, 2, 1).reshape(-1, tiles.shape[1])[:rows].contiguous()


class Plan(NamedTuple):
    """Where the kept rows of a layer are, worked out once per row layout (`plan`, cached).

    units: the kernel's (tile, first slot, slots, output column) per piece of a tile, as a ctypes array,
    and their count; rows: N kept rows; index: (N,) their indices (bias); tiles: (K,) the tiles they touch;
    slots: (N,) where each kept row is among those tiles' K * TILE outputs.
    """

    units: ctypes.Array
    count: int
    rows: int
    index: torch.Tensor
    tiles: torch.Tensor
    slots: torch.Tensor


@lru_cache(maxsize=4096)
def plan(runs: tuple[Run, ...]) -> Plan:
    """The kept rows given as runs (model/layout.py `kept`) -> their `Plan`."""
    units: list[tuple[int, int, int, int]] = []
    out = 0
    for start, length, count, step in runs:
        for i in range(count):
            pos, end = start + i * step, start + i * step + length
            while pos < end:
                t0 = pos % TILE
                slots = min(TILE - t0, end - pos)
                units.append((pos // TILE, t0, slots, out))
                pos, out = pos + slots, out + slots
    index = torch.tensor([u[0] * TILE + u[1] + j for u in units for j in range(u[2])], dtype=torch.long)
    touched = sorted({u[0] for u in units})
    where = {t: i for i, t in enumerate(touched)}
    slots = torch.tensor(
        [where[u[0]] * TILE + u[1] + j for u in units for j in range(u[2])], dtype=torch.long
    )
    array = (ctypes.c_int64 * max(1, 4 * len(units)))(*(v for u in units for v in u))
    return Plan(array, len(units), out, index, torch.tensor(touched, dtype=torch.long), slots)


def linear(
    x: torch.Tensor,
    tiles: torch.Tensor,
    bias: torch.Tensor | None,
    rows: tuple[Run, ...],
    cols: tuple[Segment, ...],
) -> torch.Tensor:
    """x times the kept rows `rows` and kept columns `cols` of a tiled weight, plus their bias.

    x: (..., width), its last dim the kept columns in segment order; tiles: (P, C, TILE); bias: (R,) or
    None; rows: kept rows as runs; cols: ((weight column, x column, length), ...). -> (..., N).
    Up to TILED_MAX_ROWS float32 rows without grad take the kernel; otherwise torch's matmul per column
    segment on the kept tiles.
    """
    p = plan(rows)
    flat = x.reshape(-1, x.shape[-1])
    if cpu_kernels.applies(flat, tiles[0], flat.shape[0], cpu_kernels.TILED_MAX_ROWS):
        out = cpu_kernels.tiled(flat, tiles, bias, (p.units, p.count, p.rows), cols)
    else:
        out = _matmul(flat, tiles, p, cols)
        if bias is not None:
            out = out + bias.index_select(0, p.index.to(bias.device))
    return out.view(*x.shape[:-1], p.rows)


def _matmul(flat: torch.Tensor, tiles: torch.Tensor, p: Plan, cols: tuple[Segment, ...]) -> torch.Tensor:
    """torch's form: per column segment one batched matmul over the touched tiles -> (M, N)."""
    touched = p.tiles.to(tiles.device)
    first, k = int(p.tiles[0]) if len(p.tiles) else 0, len(p.tiles)
    contiguous = k == 0 or int(p.tiles[-1]) - first + 1 == k  # a range of tiles: a view, no copy
    acc = None
    for wcol, xcol, length in cols:
        block = tiles[:, wcol : wcol + length]  # (P, length, TILE)
        block = block[first : first + k] if contiguous else block.index_select(0, touched)
        part = torch.matmul(flat[:, xcol : xcol + length], block)  # (K, M, TILE)
        acc = part if acc is None else acc.add_(part)
    if acc is None:  # no kept columns: zeros
        acc = flat.new_zeros(k, flat.shape[0], TILE)
    out = acc.permute(1, 0, 2).reshape(flat.shape[0], k * TILE)
    return out.index_select(1, p.slots.to(out.device))


def tile_layer(layer: nn.Linear) -> None:
    """Move `layer.weight` into the parameter `layer.tiles` (no grad); the weight parameter is removed, so a
    read of it fails loudly."""
    if layer.tiles is not None:
        return
    layer.tiles_grad = layer.weight.requires_grad
    tiles = tile(layer.weight.detach())
    del layer.weight
    layer.tiles = nn.Parameter(tiles, requires_grad=False)


def weight_in_state_dict(layer: nn.Module, state: dict, prefix: str, local_metadata: dict) -> None:
    """A state-dict hook of a tiled layer: its row-major `weight` in place of `tiles`, so saving a served
    model writes the usual checkpoint."""
    key = prefix + "tiles"
    if key in state:
        state[prefix + "weight"] = untile(state.pop(key), layer.out_features)


def untile_layer(layer: nn.Linear) -> None:
    """Undo `tile_layer`: the row-major weight parameter back, the tiles dropped."""
    if layer.tiles is None:
        return
    weight = untile(layer.tiles, layer.out_features)
    layer.tiles = None
    layer.weight = nn.Parameter(weight, requires_grad=layer.tiles_grad)
