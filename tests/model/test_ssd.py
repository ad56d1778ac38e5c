# SPDX-License-Identifier: Apache-2.0
"""Tests for the pure-torch Mamba2 SSD scan (`nemotron_elastic.model.ssd`).

The chunked algorithm is checked against the sequential recurrence `ssd_naive` in float64 (to 1e-10),
against its own decoding step and sequence splitting, against transformers' `mamba2_chunk_scan` torch
path (fp32), and for gradients (`gradcheck`) and half-precision inputs.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nemotron_elastic.model.ssd import ssd_chunked, ssd_naive, ssd_scan, ssd_step

F64_ATOL = 1e-10


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make_inputs(
    b: int = 2,
    l: int = 37,
    h: int = 4,
    p: int = 3,
    g: int = 2,
    n: int = 5,
    *,
    with_d: bool = True,
    with_init: bool = True,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    dt_scale: float = 0.5,
) -> dict[str, torch.Tensor | None]:
    """Random SSD inputs with the signs the mixer guarantees (dt > 0, A < 0)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    return {
        "x": randn(b, l, h, p),
        "dt": (torch.rand(b, l, h, generator=gen, dtype=torch.float64) * dt_scale + 1e-3).to(dtype),
        "A": (-torch.rand(h, generator=gen, dtype=torch.float64) * 3 - 0.1).to(dtype),
        "B": randn(b, l, g, n),
        "C": randn(b, l, g, n),
        "D": randn(h) if with_d else None,
        "initial_state": randn(b, h, p, n) if with_init else None,
    }


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, what: str = "") -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual.double() - expected.double()).abs()
    max_diff = diff.max().item() if diff.numel() else 0.0
    mean_diff = diff.mean().item() if diff.numel() else 0.0
    assert max_diff <= atol, f"{what}: max abs diff {max_diff:.3e} > {atol:.1e} (mean {mean_diff:.3e})"


def run_naive(inp: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return ssd_naive(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], inp["D"], inp["initial_state"])


def run_chunked(inp: dict, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return ssd_chunked(
        inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], chunk_size,
        D=inp["D"], initial_state=inp["initial_state"], return_final_state=True,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# chunked == sequential recurrence (float64)


@pytest.mark.parametrize("chunk_size", [1, 3, 8, 64])
@pytest.mark.parametrize("g", [1, 2])
@pytest.mark.parametrize("with_d", [False, True])
@pytest.mark.parametrize("with_init", [False, True])
def test_chunked_matches_naive(chunk_size: int, g: int, with_d: bool, with_init: bool) -> None:
    # l = 37 is a multiple of none of the chunk sizes but 1, and shorter than 64 (one padded chunk);
    # l = 24 is an exact multiple of 1, 3 and 8 (no padding).
    for l in (37, 24):
        inp = make_inputs(l=l, h=4, g=g, with_d=with_d, with_init=with_init)
        y_ref, s_ref = run_naive(inp)
        y, s = run_chunked(inp, chunk_size)
        assert y.dtype == torch.float64 and s.dtype == torch.float64
        assert_close(y, y_ref, F64_ATOL, f"y (l={l})")
        assert_close(s, s_ref, F64_ATOL, f"final state (l={l})")


def test_chunked_returns_y_only_by_default() -> None:
    inp = make_inputs()
    y = ssd_chunked(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 8)
    assert isinstance(y, torch.Tensor) and y.shape == inp["x"].shape


def test_strong_decay_is_finite() -> None:
    """Log-decays summing to about -2e4 inside a chunk: no overflow, no nan in forward or backward."""
    inp = make_inputs(l=64, dt_scale=20.0)
    inp["A"] = torch.full_like(inp["A"], -30.0)
    leaves = [inp[k].requires_grad_() for k in ("x", "dt", "A", "B", "C")]
    y, s = run_chunked(inp, 64)
    y_ref, s_ref = run_naive(inp)
    assert_close(y, y_ref, F64_ATOL, "y")
    (y.sum() + s.sum()).backward()
    assert all(torch.isfinite(t.grad).all() for t in leaves), "non-finite gradient under strong decay"


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 2),
    l=st.integers(1, 20),
    g=st.integers(1, 3),
    heads_per_group=st.integers(1, 3),
    p=st.integers(1, 4),
    n=st.integers(1, 6),
    chunk_size=st.integers(1, 24),
    with_d=st.booleans(),
    with_init=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_chunked_matches_naive_property(
    b: int, l: int, g: int, heads_per_group: int, p: int, n: int, chunk_size: int,
    with_d: bool, with_init: bool, seed: int,
) -> None:  # fmt: skip
    inp = make_inputs(b, l, g * heads_per_group, p, g, n, with_d=with_d, with_init=with_init, seed=seed)
    y_ref, s_ref = run_naive(inp)
    y, s = run_chunked(inp, chunk_size)
    assert_close(y, y_ref, F64_ATOL, "y")
    assert_close(s, s_ref, F64_ATOL, "final state")


def test_non_contiguous_inputs() -> None:
    """The mixer passes slices of a packed projection and conv outputs in (b, d, l) layout."""
    inp = make_inputs(l=19)
    y_ref, s_ref = run_chunked(inp, 8)
    b, l, h, p = inp["x"].shape
    g, n = inp["B"].shape[-2:]
    # x as the transpose of a channels-first (b, h*p, l) tensor; dt, B, C as slices of one packed tensor.
    x_t = inp["x"].reshape(b, l, h * p).transpose(1, 2).contiguous().transpose(1, 2).view(b, l, h, p)
    packed = torch.cat([inp["B"].reshape(b, l, -1), inp["C"].reshape(b, l, -1), inp["dt"]], dim=-1)
    odd = {
        **inp,
        "x": x_t,
        "B": packed[..., : g * n].unflatten(-1, (g, n)),
        "C": packed[..., g * n : 2 * g * n].unflatten(-1, (g, n)),
        "dt": packed[..., 2 * g * n :],
    }
    assert not any(odd[k].is_contiguous() for k in ("x", "B", "C", "dt"))
    y, s = run_chunked(odd, 8)
    assert_close(y, y_ref, F64_ATOL, "y (non-contiguous inputs)")
    assert_close(s, s_ref, F64_ATOL, "final state (non-contiguous inputs)")
    y_t, s_t = ssd_step(
        odd["initial_state"].transpose(-1, -2).contiguous().transpose(-1, -2),
        odd["x"][:, 0], odd["dt"][:, 0], odd["A"], odd["B"][:, 0], odd["C"][:, 0], odd["D"],
    )  # fmt: skip
    y_t_ref, s_t_ref = ssd_step(
        inp["initial_state"], inp["x"][:, 0], inp["dt"][:, 0], inp["A"],
        inp["B"][:, 0], inp["C"][:, 0], inp["D"],
    )  # fmt: skip
    assert_close(y_t, y_t_ref, F64_ATOL, "step y (non-contiguous inputs)")
    assert_close(s_t, s_t_ref, F64_ATOL, "step state (non-contiguous inputs)")


# ----------------------------------------------------------------------------------------------------------
# decoding step and sequence splitting


@pytest.mark.parametrize("g", [1, 2])
def test_step_matches_chunked(g: int) -> None:
    inp = make_inputs(l=11, h=4, g=g)
    y_ref, s_ref = run_chunked(inp, 4)
    state = inp["initial_state"]
    originals = {k: v.clone() for k, v in inp.items() if v is not None}
    ys = []
    for t in range(inp["x"].shape[1]):
        before = state.clone()
        y_t, new_state = ssd_step(
            state, inp["x"][:, t], inp["dt"][:, t], inp["A"], inp["B"][:, t], inp["C"][:, t], inp["D"]
        )
        assert torch.equal(state, before), "ssd_step modified the state in place"
        ys.append(y_t)
        state = new_state
    assert_close(torch.stack(ys, dim=1), y_ref, F64_ATOL, "y (token by token)")
    assert_close(state, s_ref, F64_ATOL, "final state (token by token)")
    for k, v in originals.items():
        assert torch.equal(inp[k], v), f"input {k} was modified"


@pytest.mark.parametrize("split", [1, 5, 16, 29])
def test_split_sequence_matches_whole(split: int) -> None:
    inp = make_inputs(l=30)
    y_whole, s_whole = run_chunked(inp, 8)
    first = {**inp, **{k: inp[k][:, :split] for k in ("x", "dt", "B", "C")}}
    y1, s1 = run_chunked(first, 8)
    second = {**inp, **{k: inp[k][:, split:] for k in ("x", "dt", "B", "C")}, "initial_state": s1}
    y2, s2 = run_chunked(second, 8)
    assert_close(torch.cat([y1, y2], dim=1), y_whole, F64_ATOL, "y (two halves)")
    assert_close(s2, s_whole, F64_ATOL, "final state (two halves)")


def test_scan_dispatcher_on_cpu_is_chunked() -> None:
    inp = make_inputs()
    y_ref, s_ref = run_chunked(inp, 8)
    y, s = ssd_scan(
        inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 8,
        D=inp["D"], initial_state=inp["initial_state"], return_final_state=True,
    )  # fmt: skip
    assert torch.equal(y, y_ref) and torch.equal(s, s_ref)


# ----------------------------------------------------------------------------------------------------------
# gradients


def test_gradcheck_chunked() -> None:
    inp = make_inputs(b=1, l=5, h=2, p=2, g=1, n=3)
    names = ["x", "dt", "A", "B", "C", "D", "initial_state"]
    leaves = tuple(inp[k].clone().requires_grad_() for k in names)

    def fn(x, dt, A, B, C, D, s0):
        return ssd_chunked(x, dt, A, B, C, 2, D=D, initial_state=s0, return_final_state=True)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7)


def test_gradcheck_step() -> None:
    inp = make_inputs(b=1, l=1, h=2, p=2, g=1, n=3)
    step_inputs = [inp["initial_state"], inp["x"][:, 0], inp["dt"][:, 0], inp["A"]]
    step_inputs += [inp["B"][:, 0], inp["C"][:, 0], inp["D"]]
    leaves = tuple(t.clone().requires_grad_() for t in step_inputs)
    assert torch.autograd.gradcheck(ssd_step, leaves, eps=1e-6, atol=1e-7)


def test_gradients_match_naive() -> None:
    """Larger than gradcheck can afford: autograd through the chunked form == through the recurrence."""
    inp = make_inputs(l=21, h=4, g=2)
    names = ["x", "dt", "A", "B", "C", "D", "initial_state"]
    grads = []
    for fn in (run_naive, lambda i: run_chunked(i, 8)):
        leaves = {k: inp[k].clone().requires_grad_() for k in names}
        y, s = fn(leaves)
        w_y = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)  # non-uniform output weights
        ((y * w_y).sum() + (s * s).sum()).backward()
        grads.append({k: v.grad for k, v in leaves.items()})
    for k in names:
        assert_close(grads[1][k], grads[0][k], 1e-9, f"grad {k}")


# ----------------------------------------------------------------------------------------------------------
# dtypes and the reference implementation


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_input_close_to_float32(half: torch.dtype) -> None:
    inp32 = make_inputs(l=40, h=4, g=2, n=8, dtype=torch.float32)
    y32, s32 = run_chunked(inp32, 16)
    inp16 = {k: (v.to(half) if v is not None and k != "initial_state" else v) for k, v in inp32.items()}
    y16, s16 = run_chunked(inp16, 16)
    assert y16.dtype == half, "y must come back in x.dtype"
    assert s16.dtype == torch.float32, "half inputs are scanned in float32"
    scale = y32.abs().max().item()
    assert_close(y16, y32, 3e-2 * scale, f"{half} y vs float32 y")
    assert_close(s16, s32, 3e-2 * s32.abs().max().item(), f"{half} final state vs float32")


def test_matches_transformers_mamba2_chunk_scan() -> None:
    """Same function as transformers' NemotronH torch path (dt already processed, so no softplus/bias)."""
    modeling = pytest.importorskip("transformers.models.nemotron_h.modeling_nemotron_h")
    # The hub-kernel decorator keeps the plain torch function as __wrapped__; use it even if mamba_ssm is
    # installed, since these are CPU tensors.
    hf_scan = getattr(modeling.mamba2_chunk_scan, "__wrapped__", modeling.mamba2_chunk_scan)
    inp = make_inputs(b=2, l=45, h=8, p=4, g=2, n=6, dtype=torch.float32)
    y_ref, s_ref = hf_scan(
        inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 16,
        D=inp["D"], initial_states=inp["initial_state"], dt_softplus=False, return_final_states=True,
    )  # fmt: skip
    y, s = run_chunked(inp, 16)
    assert_close(y, y_ref, 1e-5, "y vs transformers")
    assert_close(s, s_ref, 1e-5, "final state vs transformers")
