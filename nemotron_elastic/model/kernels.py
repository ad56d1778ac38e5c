# SPDX-License-Identifier: Apache-2.0
"""Fused kernels on CUDA, chosen explicitly: `kernels: auto | required | torch` (docs/DESIGN.md 3.13).

    torch     the pure-PyTorch paths everywhere (`ssd.ssd_chunked`, `F.conv1d`); never imports a kernel
              library. The only choice on the CPU.
    auto      on CUDA: fla-core's Triton kernels for the SSD scan and the causal conv when they import and
              match the pure-PyTorch reference on a first call; otherwise one loud warning that names the
              reason and the fallback's estimated memory at the configured context. On the CPU: torch.
    required  as auto, but refuses to start without the kernels.

fla-core is a pure-Python wheel of Triton kernels (no compiled extension: it imports wherever Triton does).
Mamba2's SSD is its chunked simple GLA, with one scalar decay per head and step:

    fla:    S_t = exp(g_t) S_{t-1} + k_t v_t^T,   o_t = scale * S_t^T q_t      S: (K, V) per head
    Mamba2: h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T,   y_t = h_t C_t + D x_t    h: (P, N) per head

so q = C and k = B (each repeated from its group to the group's heads), v = dt * x, g = dt * A, scale 1,
the state transposed at the boundary, and D x added outside. mamba_ssm is not used: its package imports a
compiled extension even for its Triton ops, and it ships only as source.

References: fla-core `fla/ops/simple_gla/chunk.py` (`chunk_simple_gla`) and
`fla/modules/causal_conv1d` (read, not copied); Dao & Gu 2024 (SSD).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .norm import compute_dtype
from .ssd import ssd_chunked

KernelMode = Literal["auto", "required", "torch"]


def torch_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Depthwise causal conv + SiLU. x: (B, T, C), weight: (C, K), bias: (C,) -> (B, T, C)."""
    t, k = x.shape[1], weight.shape[-1]
    y = F.conv1d(x.transpose(1, 2), weight[:, None, :], bias, padding=k - 1, groups=x.shape[-1])[..., :t]
    return F.silu(y).transpose(1, 2)


@dataclass(frozen=True)
class Kernels:
    """The implementations a Mamba2 mixer calls: `ssd` has `ssd.ssd_chunked`'s signature, `conv` is
    `torch_conv`'s (used without a decoding cache; decoding steps stay in PyTorch)."""

    name: str
    ssd: Callable[..., torch.Tensor | tuple[torch.Tensor, torch.Tensor]]
    conv: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


TORCH = Kernels("torch", ssd_chunked, torch_conv)


def ssd_via_gla(gla: Callable, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                C: torch.Tensor, chunk_size: int, D: torch.Tensor | None = None,
                initial_state: torch.Tensor | None = None, return_final_state: bool = False):
    """The SSD scan through a simple-GLA kernel `gla` (`chunk_simple_gla`'s signature); `ssd_chunked`'s
    arguments and returns. x: (b, l, h, p), dt: (b, l, h), A: (h,), B/C: (b, l, g, n), states (b, h, p, n).
    `chunk_size` is the kernel's own (fixed) choice."""
    h, g = x.shape[2], B.shape[2]
    cd = compute_dtype(x.dtype)  # decays, states and the skip in float32 (float64 stays float64)
    q, k = C.repeat_interleave(h // g, dim=2), B.repeat_interleave(h // g, dim=2)  # head i is in group i // r
    v = (x.to(cd) * dt[..., None].to(cd)).to(x.dtype)
    gate = dt.to(cd) * A.to(cd)[None, None, :]  # (b, l, h) log decay
    init = None if initial_state is None else initial_state.transpose(-1, -2).to(cd).contiguous()
    o, final = gla(q.to(x.dtype).contiguous(), k.to(x.dtype).contiguous(), v.contiguous(), g=gate.contiguous(),
                   scale=1.0, initial_state=init, output_final_state=return_final_state)
    y = o.to(cd)
    if D is not None:
        y = y + x.to(cd) * D.to(cd)[:, None]
    y = y.to(x.dtype)
    return (y, final.transpose(-1, -2).contiguous()) if return_final_state else y


def _import_fla() -> Kernels:
    """The fla-core kernels (the import boundary: ImportError when fla-core or Triton is missing)."""
    gla = importlib.import_module("fla.ops.simple_gla").chunk_simple_gla
    conv1d = importlib.import_module("fla.modules.causal_conv1d").causal_conv1d

    def ssd(*args, **kwargs):
        return ssd_via_gla(gla, *args, **kwargs)

    def conv(x, weight, bias):
        return conv1d(x, weight, bias, activation="silu")[0]

    return Kernels("fla", ssd, conv)


def matches_reference(kernels: Kernels, device: torch.device, dtype: torch.dtype = torch.bfloat16) -> str | None:
    """Run both kernels once on small random inputs against the pure-PyTorch ones, forward and backward
    (training needs both; some fla-core / Triton pairs refuse or break only the backward, e.g. Triton
    3.4-3.7.0 on Hopper); None when they agree (within a bf16 tolerance), else what differs. Runs with
    autograd on, also when called inside `torch.inference_mode` (a model's first forward on CUDA)."""
    with torch.inference_mode(False), torch.enable_grad():
        got, want = _reference_pairs(kernels, device, dtype)
    for what, (a, ref) in zip(("ssd output", "ssd state", "ssd grad x", "ssd grad B", "ssd grad C", "conv"),
                              zip(got, want)):
        err = (a.float() - ref.float()).abs().max().item()
        scale = ref.float().abs().max().item() + 1e-6
        if not err <= 3e-2 * scale:  # bf16 keeps 8 bits: a few 1e-3 relative per op, summed over a chunk
            return f"{what} differs by {err:.3g} (max |reference| {scale:.3g})"
    return None


def _reference_pairs(kernels: Kernels, device: torch.device, dtype: torch.dtype):
    """The kernels' and the reference's outputs on the same inputs: ssd output, final state, the gradients
    of a random projection of the output with respect to x, B and C, and the conv output."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    b, l, h, p, g, n = 2, 200, 4, 16, 2, 8

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device)

    x, B, C = rand(b, l, h, p).to(dtype), rand(b, l, g, n).to(dtype), rand(b, l, g, n).to(dtype)
    dt, A, D = F.softplus(rand(b, l, h)), -torch.rand(h, generator=gen).to(device) - 0.1, rand(h)
    state, probe = rand(b, h, p, n), rand(b, l, h, p)

    def run(ssd: Callable) -> list[torch.Tensor]:
        leaves = [t.detach().requires_grad_() for t in (x, B, C)]
        y, final = ssd(leaves[0], dt, A, leaves[1], leaves[2], 64, D=D, initial_state=state,
                       return_final_state=True)
        grads = torch.autograd.grad((y.float() * probe).sum(), leaves)
        return [y.detach(), final.detach(), *grads]

    xc, w, bias = rand(b, l, 12).to(dtype), rand(12, 4).to(dtype), rand(12).to(dtype)
    return ([*run(kernels.ssd), kernels.conv(xc, w, bias).detach()],
            [*run(ssd_chunked), torch_conv(xc, w, bias).detach()])


def fallback_bytes(batch: int, context: int, heads: int, head_dim: int, state_size: int, chunk: int) -> int:
    """Estimated bytes the pure-PyTorch SSD keeps for backward per Mamba layer: the (q x q) decay matrix
    and scores of every chunk and the per-chunk states, in float32 (about 3 tensors of each)."""
    chunks = -(-context // chunk)
    return 4 * 3 * batch * heads * chunks * (chunk * chunk + head_dim * state_size)


def select_kernels(mode: KernelMode, device: torch.device, describe_fallback: Callable[[], str] = lambda: "",
                   load: Callable[[], Kernels] = _import_fla,
                   check: Callable[[Kernels, torch.device], str | None] = matches_reference) -> Kernels:
    """The kernels to run on `device` under `mode` (module docstring). `describe_fallback()` adds the
    fallback's memory cost to the warning; `load` is the import boundary and `check` the run against the
    reference (tests replace them).

    Raises:
        ValueError: `required` without CUDA, or with kernels that do not import or do not match.
    """
    if mode not in ("auto", "required", "torch"):
        raise ValueError(f"kernels: expected auto, required or torch, got {mode!r}")
    if mode == "torch":
        return TORCH
    if device.type != "cuda":
        if mode == "required":
            raise ValueError(f"kernels: required needs a CUDA device, the run is on {device.type}")
        return TORCH
    try:
        kernels = load()
    except Exception as e:  # noqa: BLE001 -- ImportError, a broken Triton install, ...: all mean "not usable"
        problem = f"fla-core does not load ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
    else:
        try:
            problem = check(kernels, device)
        except Exception as e:  # noqa: BLE001 -- a Triton compile error, a kernel refusing this GPU / Triton
            problem = f"fla-core fails on this GPU ({type(e).__name__}: {' '.join(str(e).split())[:300]})"
    if problem is None:
        return kernels
    if mode == "required":
        raise ValueError(f"kernels: required, but the fused kernels are not usable: {problem} "
                         "(pip install 'nemotron-elastic[gpu]', or set kernels: auto / torch)")
    warnings.warn(f"\n*** kernels: the fused Mamba kernels are not used: {problem}. Falling back to the "
                  f"pure-PyTorch SSD scan{describe_fallback()}. Install them with pip install "
                  "'nemotron-elastic[gpu]', or set kernels: torch to silence this. ***", stacklevel=2)
    return TORCH
