# SPDX-License-Identifier: Apache-2.0
"""CPU decoding kernels (csrc/decode.c): built on first use with the system's C compiler, optional.

Six kernels, all for float32 inference on a CPU:
- `few_rows`: decoding sends a few rows through every linear layer. There the BLAS GEMMs of this kind of
  CPU run far below the bandwidth that one row reaches, and a sliced layer costs one BLAS call per run of
  kept units. The kernel reads each kept weight row once for all the rows, in place in the parent's
  weight, with every run of a sliced layer in one call (benchmarks/decode_budgets.py `few_rows`).
- `ssm_step`: one recurrent Mamba2 step with the state (the largest tensor of a decoding step) read and
  written once, where torch's ops pass over it three times (model/ssd.py `ssd_step`).
- `rms_norm`: the RMSNorms of a decoding step's rows, plain or gated per group (Mamba2's output norm), one
  call where torch runs about ten small ops (model/norm.py).
- `conv_step`: Mamba2's causal conv for one token per row, with SiLU, the conv state shifted in place
  (model/mamba2.py), where torch concatenates, gathers, multiplies and sums.
- `tiled`: `few_rows` on a weight stored in tiles for serving (model/tiles.py), where every budget's kept
  columns are contiguous: each budget reads its own bytes only.
- `mamba_step`: a Mamba2 mixer's decoding step between its two projections (conv, step sizes, SSM step,
  gated norm) in one call, where torch's glue between the kernels above ran about 50 small ops.

Nothing is installed ahead of time and nothing fails without them: the first call builds the library
(model/cpu_build.py: the system's C compiler, a cache folder). Without a compiler, on a CPU without
AVX-512, or with NEMOTRON_ELASTIC_CPU_KERNELS=0, `library()` is None (`unavailable_reason()` says why) and
the callers use torch's ops, which give the same values up to float rounding (another summation order).

    lib = library()                       # None when unavailable (reason: `unavailable_reason()`)
    y = few_rows(x, weight, bias)         # x (M, K) float32, weight (N, K) rows readable with stride
    y = few_rows(x, weight, None, rows=index, segments=((w_col, x_col, length), ...))
    y = ssm_step(state, x, dt, A, B, C, D)  # state (b, h, p, n) updated in place
    y = rms_norm(x, weight, eps, z=gate, groups=g)  # x, gate (..., d) -> (..., d)
    y = conv_step(conv_state, x, weight, channels, bias, counts)  # conv_state (b, C, K-1) updated in place
    y = tiled(x, tiles, bias, units, segments)  # tiles (P, C, 16): model/tiles.py
    y = mamba_step(proj, conv_state, conv_w, channels, conv_b, counts, dt_bias, dt_min, A, D, ssm_state,
                   norm_w, eps)           # both states updated in place
"""

from __future__ import annotations

import ctypes
import threading
from functools import lru_cache

import torch

from .cpu_build import load

MAX_ROWS = 16  # rows per call (measured up to 16: benchmarks/decode_budgets.py `few_rows`)
# `tiled` takes more: it holds 16 rows of a tile's outputs in registers and passes over the tile (in cache)
# once per 16 rows. Measured on 6 weights of 3264 x 1088 (whole and a 0.5 block): 1.1-1.4x faster than
# torch's matmul over the tiles at 17-48 rows, 1.04-1.1x at 64-128; so a ragged step with new prompts
# (decoding rows + prompt chunks) stays on the kernel.
TILED_MAX_ROWS = 128

_lock = threading.Lock()
_state: dict[str, object] = {}  # "lib": the loaded library or None, "why": the reason it is None


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, built on the first call; None (once and for all) when unavailable."""
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                try:
                    _state["lib"], _state["why"] = load(), ""
                except Exception as err:  # noqa: BLE001  any failure means: use torch's products
                    _state["lib"], _state["why"] = None, str(err)
    return _state["lib"]  # type: ignore[return-value]


def unavailable_reason() -> str:
    """Why `library()` is None ("" when it is loaded)."""
    library()
    return str(_state["why"])


def applies(x: torch.Tensor, weight: torch.Tensor, rows: int, max_rows: int = MAX_ROWS) -> bool:
    """Whether `few_rows` (or, with max_rows=TILED_MAX_ROWS, `tiled`) takes this product: float32 on a CPU,
    no grad, 1..max_rows rows, the weight's rows contiguous (a view of a parent's weight qualifies), and the
    library available."""
    return (
        x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.device.type == "cpu"
        and 1 <= rows <= max_rows
        and weight.dim() == 2
        and weight.stride(1) == 1
        and not torch.is_grad_enabled()
        and library() is not None
    )


@lru_cache(maxsize=4096)
def _segments(segments: tuple[tuple[int, int, int], ...]) -> tuple[ctypes.Array, ctypes.Array, ctypes.Array]:
    """(weight column, x column, length) per segment -> three ctypes int64 arrays (cached: few distinct)."""
    array = ctypes.c_int64 * len(segments)
    return tuple(array(*(s[j] for s in segments)) for j in range(3))  # type: ignore[return-value]


def few_rows(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
    segments: tuple[tuple[int, int, int], ...] | None = None,
) -> torch.Tensor:
    """x (M, width) @ weight[rows][:, columns]^T + bias[rows] -> (M, N) float32, with the kernel.

    Args:
        x: (M, width) float32, M <= MAX_ROWS; its last dim is made contiguous if it is not.
        weight: (R, C) float32 whose last dim is contiguous (a strided view of a larger weight is read in
            place).
        bias: (R,) or None.
        rows: (N,) int64 kept weight rows (None: all R rows, N = R).
        segments: ((weight column, x column, length), ...) summed in that order (None: all C columns,
            width = C).
    Callers check `applies` first.
    """
    lib = library()
    m = x.shape[0]
    if x.stride(-1) != 1:
        x = x.contiguous()
    if segments is None:
        segments = ((0, 0, weight.shape[1]),)
    woff, xoff, length = _segments(segments)
    rows = _longs(rows)
    n = weight.shape[0] if rows is None else rows.numel()
    if bias is not None and bias.stride(0) != 1:
        bias = bias.contiguous()
    y = torch.empty(m, n, dtype=torch.float32)
    if m == 0 or n == 0:
        return y
    lib.ne_few_rows_f32(
        x.data_ptr(), x.stride(0), weight.data_ptr(), weight.stride(0),
        None if rows is None else rows.data_ptr(), None if bias is None else bias.data_ptr(),
        woff, xoff, length, len(segments), y.data_ptr(), n, m, n,
    )  # fmt: skip
    return y


def tiled(
    x: torch.Tensor,
    tiles: torch.Tensor,
    bias: torch.Tensor | None,
    units: tuple[ctypes.Array, int, int],
    segments: tuple[tuple[int, int, int], ...],
) -> torch.Tensor:
    """x (M, width) times a weight stored in tiles (model/tiles.py) -> (M, N) float32, the kernel's form of
    `few_rows` for the tiled layout.

    Args:
        x: (M, width) float32, M <= TILED_MAX_ROWS; its last dim is made contiguous if it is not.
        tiles: (P, C, TILE) float32, contiguous: tiles[p, k, t] = weight[p * TILE + t, k].
        bias: (P * TILE,) (padded like the tiles) or None.
        units: (array of (tile, first slot, slots, output column) x U, U, N) (model/tiles.py `plan`).
        segments: ((weight column, x column, length), ...) summed in that order.
    Callers check `applies(x, tiles[0], M)` first.
    """
    m = x.shape[0]
    if x.stride(-1) != 1:
        x = x.contiguous()
    array, count, n = units
    woff, xoff, length = _segments(segments)
    y = torch.empty(m, n, dtype=torch.float32)
    if m == 0 or n == 0:
        return y
    library().ne_tiled_f32(
        x.data_ptr(), x.stride(0), tiles.data_ptr(), tiles.shape[1], array, count,
        None if bias is None else bias.data_ptr(), woff, xoff, length, len(segments), y.data_ptr(), n, m,
    )  # fmt: skip
    return y


def ssm_step_applies(state: torch.Tensor) -> bool:
    """Whether `ssm_step` takes a step on this state: float32, contiguous, on a CPU, no grad, library built."""
    return (
        state.dtype == torch.float32
        and state.device.type == "cpu"
        and state.is_contiguous()
        and not torch.is_grad_enabled()
        and library() is not None
    )


def _rows(t: torch.Tensor) -> torch.Tensor:
    """t (b, ...) as float32 with contiguous rows (any row stride): what the kernels read in place. Checked
    on the strides, with no torch op when t already qualifies (a decoding step calls this ~50 times)."""
    if t.dtype != torch.float32:
        t = t.float()
    inner, expected = t.stride()[1:], []
    size = 1
    for n in reversed(t.shape[1:]):
        expected.append(size)
        size *= n
    if tuple(reversed(expected)) == inner or t.numel() == 0:
        return t
    return t.contiguous()


Tensor = torch.Tensor


def _longs(t: Tensor | None) -> Tensor | None:
    """An index tensor as the kernels read it: contiguous int64 (None stays None; no op when it already is)."""
    return t if t is None or (t.dtype == torch.int64 and t.is_contiguous()) else t.long().contiguous()


def ssm_step(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None) -> Tensor:
    """One recurrent step, `state` updated in place (model/ssd.py `ssd_step`, inplace=True).

    Args:
        state: (b, h, p, n) float32, contiguous. x: (b, h, p); dt: (b, h), positive; A: (h,), negative;
        B, C: (b, g, n); D: (h,) or None. Inputs of other float dtypes are read as float32.
    Returns:
        y (b, h, p) float32. Callers check `ssm_step_applies` first.
    """
    b, h, p, n = state.shape
    g = B.shape[-2]
    y = torch.empty(b, h, p, dtype=torch.float32)
    if state.numel() == 0:
        return y
    x, dt, B, C = _rows(x), _rows(dt), _rows(B), _rows(C)
    if B.stride(0) != C.stride(0):  # one row stride for both (they are views of one projection, usually)
        B, C = B.contiguous(), C.contiguous()
    A = A if A.dtype == torch.float32 and A.stride(0) == 1 else A.float().contiguous()
    D = D if D is None or (D.dtype == torch.float32 and D.stride(0) == 1) else D.float().contiguous()
    library().ne_ssm_step_f32(
        state.data_ptr(), x.data_ptr(), x.stride(0), dt.data_ptr(), dt.stride(0), A.data_ptr(), B.data_ptr(),
        C.data_ptr(), B.stride(0), None if D is None else D.data_ptr(), y.data_ptr(), b, h, p, n, g,
    )  # fmt: skip
    return y


NORM_MAX_ROWS = 64  # the norm kernel takes decoding steps (prefill and scoring keep torch's ops)


def norm_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `rms_norm` takes this norm: float32 x and weight on a CPU, no grad, at most NORM_MAX_ROWS rows,
    the library built."""
    return (
        x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.device.type == "cpu"
        and x.numel() <= NORM_MAX_ROWS * max(1, x.shape[-1])
        and not torch.is_grad_enabled()
        and library() is not None
    )


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, z: torch.Tensor | None = None, groups: int = 1
) -> torch.Tensor:
    """weight * v / sqrt(mean(v^2) + eps) per group of channels, v = x * silu(z) (or x). x, z: (..., d)
    float32; weight: (d,) -> (..., d) float32, contiguous. Callers check `norm_applies` first."""
    d = x.shape[-1]
    flat = _rows(x if x.dim() == 2 else x.reshape(-1, d))
    gate = None if z is None else _rows(z if z.dim() == 2 else z.reshape(-1, d))
    if weight.stride(0) != 1:
        weight = weight.contiguous()
    y = torch.empty(x.shape, dtype=torch.float32)
    if y.numel():
        library().ne_rms_norm_f32(
            flat.data_ptr(), flat.stride(0), None if gate is None else gate.data_ptr(),
            0 if gate is None else gate.stride(0), weight.data_ptr(), y.data_ptr(), flat.shape[0], d, groups, eps,
        )  # fmt: skip
    return y


def conv_step(
    state: Tensor, x: Tensor, weight: Tensor, channels: Tensor | None, bias: Tensor | None, counts: Tensor | None
) -> Tensor:
    """silu(depthwise causal conv) of one new input per row, each fed row's state shifted in place.

    Args:
        state: (b, C, K-1) float32, contiguous: each row's last K-1 inputs of the C kept channels.
        x: (b, C) the new inputs (rows at any stride).
        weight: (C_full, 1, K) or (C_full, K) float32, contiguous (the parent's conv1d weight).
        channels: (C,) int64 kept channels of the weight (None: the first C).
        bias: (C_full,) or None.
        counts: (b,) tokens fed per row, 0 or 1 (None: every row fed); a row fed 0 keeps its state.
    Returns:
        (b, C) float32. Callers check `ssm_step_applies(state)` first (the same conditions).
    """
    b, c, k1 = state.shape
    x = _rows(x)
    channels, counts = _longs(channels), _longs(counts)
    out = torch.empty(b, c, dtype=torch.float32)
    if out.numel():
        library().ne_conv_step_f32(
            state.data_ptr(), x.data_ptr(), x.stride(0), weight.data_ptr(),
            None if channels is None else channels.data_ptr(), None if bias is None else bias.data_ptr(),
            None if counts is None else counts.data_ptr(), out.data_ptr(), b, c, k1 + 1,
        )  # fmt: skip
    return out


def mamba_step(
    proj: Tensor, conv_state: Tensor, conv_weight: Tensor, channels: Tensor | None, conv_bias: Tensor | None,
    counts: Tensor | None, dt_bias: Tensor, dt_min: float, A: Tensor, D: Tensor | None, ssm_state: Tensor,
    norm_weight: Tensor, eps: float,
) -> Tensor:
    """A Mamba2 mixer's step between its projections for one token per row: `conv_step`, the step sizes,
    `ssm_step` and the gated group norm in one call (model/mamba2.py `_fused_step`); both states in place.

    Args:
        proj: (b, I + conv_dim + H) float32 in-projection rows [z | x B C | dt] (rows at any stride).
        conv_state: (b, conv_dim, K-1) float32, contiguous; conv_weight, channels, conv_bias, counts: as in
            `conv_step` (counts: a row fed 0 tokens keeps both states and gets dt = 0).
        dt_bias, A (negative), D (or None): (H,) of the kept heads; dt_min: the step sizes' lower bound.
        ssm_state: (b, H, P, N) float32, contiguous; its group count G = (conv_dim - I) / (2 N).
        norm_weight: (I,) the gated norm's weight of the kept channels, over G groups; eps: its epsilon.
    Returns:
        (b, I) float32, the gated norm's output. Callers check `ssm_step_applies` on both states first.
    """
    b, h, p, n = ssm_state.shape
    conv_dim, inner = conv_state.shape[1], h * p
    proj = _rows(proj)
    channels, counts = _longs(channels), _longs(counts)
    dt_bias, A, D, norm_weight = (None if t is None else t.float().contiguous() for t in (dt_bias, A, D, norm_weight))
    y = torch.empty(b, inner, dtype=torch.float32)
    if y.numel():
        scratch = torch.empty(b * (conv_dim + h + inner), dtype=torch.float32)
        library().ne_mamba_step_f32(
            proj.data_ptr(), proj.stride(0), conv_state.data_ptr(), conv_weight.data_ptr(),
            None if channels is None else channels.data_ptr(), None if conv_bias is None else conv_bias.data_ptr(),
            None if counts is None else counts.data_ptr(), conv_state.shape[2] + 1, dt_bias.data_ptr(), dt_min,
            A.data_ptr(), None if D is None else D.data_ptr(), ssm_state.data_ptr(), h, p, n,
            (conv_dim - inner) // (2 * n), norm_weight.data_ptr(), eps, scratch.data_ptr(), y.data_ptr(), b,
        )  # fmt: skip
    return y
