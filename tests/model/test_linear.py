# SPDX-License-Identifier: Apache-2.0
"""The few-rows decoding linear (model/layout.py `linear`, `Linear`): the same values as F.linear for every
shape and dtype, the fast path only where it is meant to run, and module hooks still firing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from nemotron_elastic.model import cpu_kernels
from nemotron_elastic.model.layout import FEW_ROWS, KERNEL_MIN_ROWS, MIN_WEIGHT, Linear, linear


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 72), k=st.sampled_from([4, 37, 1024]), lead=st.integers(1, 3), bias=st.booleans(),
       seed=st.integers(0, 2**16))
def test_linear_matches_f_linear(rows: int, k: int, lead: int, bias: bool, seed: int) -> None:
    """float32: the few-rows kernel exactly where it is built and takes the rows (KERNEL_MIN_ROWS to
    cpu_kernels.MAX_ROWS), else (W @ x^T)^T exactly where the few-rows form applies (rows in FEW_ROWS, weight
    of MIN_WEIGHT+ elements), F.linear exactly elsewhere, and F.linear's values within rounding everywhere;
    float64 (any shape) and rows spread over leading dims give the same."""
    g = torch.Generator().manual_seed(seed)
    n = MIN_WEIGHT[torch.float32] // k + 3 if k == 1024 else 29  # the large weight is just over MIN_WEIGHT
    x = torch.randn(lead, rows, k, generator=g, dtype=torch.float64)
    w = torch.randn(n, k, generator=g, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64) if bias else None
    x32, w32, b32 = x.float(), w.float(), None if b is None else b.float()
    with torch.no_grad():
        got32, got64 = linear(x32, w32, b32), linear(x, w, b)
        low, high = FEW_ROWS[torch.float32]
        fast = low <= lead * rows <= high and w.numel() >= MIN_WEIGHT[torch.float32]
        flat = x32.reshape(-1, k)
        kernel = cpu_kernels.library() is not None and KERNEL_MIN_ROWS <= lead * rows <= cpu_kernels.MAX_ROWS
        if kernel:
            expected = cpu_kernels.few_rows(flat, w32, b32).reshape(lead, rows, n)
        elif fast:
            plain = w32 @ flat.t() if b32 is None else torch.addmm(b32[:, None], w32, flat.t())
            expected = plain.t().reshape(lead, rows, n)
        else:
            expected = F.linear(x32, w32, b32)
    assert got32.shape == (lead, rows, n) and got32.is_contiguous()
    assert torch.equal(got32, expected)
    torch.testing.assert_close(got32.double(), F.linear(x, w, b), rtol=1e-4, atol=1e-4)
    assert torch.equal(got64, F.linear(x, w, b))


@pytest.mark.parametrize("rows", [1, 2, 8, 65])
@pytest.mark.parametrize("view", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_bfloat16_path(rows: int, view: bool, bias: bool) -> None:
    """bfloat16 from MIN_WEIGHT[bfloat16] elements: one row as torch.mv on a contiguous weight (F.linear on a
    strided view, which mv would copy), FEW_ROWS rows as W @ x^T (views too), F.linear beyond."""
    w = torch.randn(2048, 1024).bfloat16()
    w = w[:, :768] if view else w[:, :768].contiguous()  # 1.5M elements
    b = torch.randn(2048).bfloat16() if bias else None
    x = torch.randn(rows, 768).bfloat16()
    with torch.no_grad():
        got = linear(x, w, b)
        low, high = FEW_ROWS[torch.bfloat16]
        if rows == 1 and not view:
            want = (torch.mv(w, x[0]) if b is None else torch.addmv(b, w, x[0]))[None]
        elif low <= rows <= high:
            want = ((w @ x.t()) if b is None else torch.addmm(b[:, None], w, x.t())).t()
        else:
            want = F.linear(x, w, b)
        assert got.shape == (rows, 2048) and got.is_contiguous()
        assert torch.equal(got, want)
        torch.testing.assert_close(got.float(), F.linear(x.float(), w.float(), None if b is None else b.float()),
                                   rtol=2e-2, atol=0.5)


def test_fast_path_only_without_grad() -> None:
    """With grad the layer is F.linear (gradients as usual); a non-contiguous input works on the fast paths
    (the kernel's, and W @ x^T from more rows than the kernel takes)."""
    w = torch.randn(MIN_WEIGHT[torch.float32] // 512, 512, requires_grad=True)
    x = torch.randn(FEW_ROWS[torch.float32][0], 512)
    y = linear(x, w)
    assert torch.equal(y, F.linear(x, w))
    y.sum().backward()
    torch.testing.assert_close(w.grad, x.sum(0).expand_as(w))
    with torch.no_grad():
        for rows in (8, 40):
            strided = torch.randn(rows, 512 * 3)[:, ::3]  # (rows, 512), not contiguous
            torch.testing.assert_close(linear(strided, w), F.linear(strided, w), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("rows", [1, 8])
def test_linear_module_keeps_hooks_and_state(rows: int) -> None:
    """`Linear` is an nn.Linear (state dict keys, isinstance) whose forward hooks fire on every path."""
    torch.manual_seed(0)
    ref, mod = torch.nn.Linear(8, 4), Linear(8, 4)
    mod.load_state_dict(ref.state_dict())
    assert isinstance(mod, torch.nn.Linear) and mod.state_dict().keys() == ref.state_dict().keys()
    seen = []
    mod.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    x = torch.randn(rows, 8)
    with torch.no_grad():
        torch.testing.assert_close(mod(x), ref(x))
    assert seen == [x.shape]
