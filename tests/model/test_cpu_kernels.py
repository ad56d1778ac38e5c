# SPDX-License-Identifier: Apache-2.0
"""The CPU decoding kernels (model/cpu_kernels.py, cpu_build.py, csrc/decode.c): the few-rows product, the
one-pass SSM step, the norms and the conv step against float64 references on random shapes, runs and
strided views; the build (cached, atomic, rebuilt when damaged, pruned, switched off by the environment, a
temp-dir fallback); the paths that use them; and float32 decoding through them equal to the float64 full
forward pass."""

from __future__ import annotations

import ctypes
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nemotron_elastic.model import cpu_build, cpu_kernels, layout
from nemotron_elastic.model.layout import Kept, kept, sub_linear

needs_kernel = pytest.mark.skipif(
    cpu_kernels.library() is None, reason=f"kernel unavailable: {cpu_kernels.unavailable_reason()}"
)


def reference(x, weight, bias, rows, segments):
    """float64 x @ weight[rows][:, columns]^T + bias[rows], columns in segment order."""
    w = weight.double() if rows is None else weight.double()[rows]
    cols = torch.cat([torch.arange(c, c + n) for c, _, n in segments]) if segments else torch.arange(0)
    xs = torch.cat([torch.arange(o, o + n) for _, o, n in segments]) if segments else torch.arange(0)
    out = x.double()[:, xs] @ w[:, cols].t()
    if bias is not None:
        out = out + (bias.double() if rows is None else bias.double()[rows])
    return out


@needs_kernel
@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(1, 16),
    n_rows=st.integers(1, 40),
    parent=st.tuples(st.integers(40, 60), st.integers(40, 90)),
    cuts=st.lists(st.tuples(st.integers(0, 80), st.integers(0, 35)), min_size=1, max_size=4),
    use_rows=st.booleans(),
    use_bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matches_float64_on_random_runs(m, n_rows, parent, cuts, use_rows, use_bias, seed):
    g = torch.Generator().manual_seed(seed)
    big = torch.randn(parent[0] + 5, parent[1] + 7, generator=g)
    weight = big[3 : 3 + parent[0], 5 : 5 + parent[1]]  # a strided view: rows longer than the columns read
    segments, offset = [], 0
    for start, length in cuts:  # column runs in any order, possibly overlapping, some of odd length
        start = min(start, parent[1] - 1)
        length = min(length, parent[1] - start)
        segments.append((start, offset, length))
        offset += length
    x = torch.randn(m, offset + 3, generator=g)[:, :offset]  # x rows with a stride too
    rows = torch.randperm(parent[0], generator=g)[:n_rows] if use_rows else None
    bias = torch.randn(parent[0], generator=g) if use_bias else None
    got = cpu_kernels.few_rows(x, weight, bias, rows, tuple(segments))
    want = reference(x, weight, bias, rows, segments)
    assert got.shape == want.shape and got.dtype == torch.float32
    magnitude = reference(x.abs(), weight.abs(), None if bias is None else bias.abs(), rows, segments)
    scale = 1 + (magnitude.max().item() if magnitude.numel() else 0.0)  # float32 rounding of |terms| summed
    assert (got.double() - want).abs().max().item() <= 1e-6 * scale


@needs_kernel
@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 9, 16])
def test_whole_weight_odd_sizes(m):
    g = torch.Generator().manual_seed(m)
    x, weight, bias = torch.randn(m, 1093, generator=g), torch.randn(37, 1093, generator=g), torch.randn(37)
    got = cpu_kernels.few_rows(x, weight, bias)
    torch.testing.assert_close(got.double(), x.double() @ weight.double().t() + bias.double(), rtol=1e-5,
                               atol=1e-4)


@needs_kernel
def test_empty_shapes():
    assert cpu_kernels.few_rows(torch.randn(0, 8), torch.randn(4, 8)).shape == (0, 4)
    assert cpu_kernels.few_rows(torch.randn(3, 8), torch.randn(4, 8), rows=torch.arange(0)).shape == (3, 0)
    bias = torch.randn(4)  # no columns: the bias alone
    assert torch.equal(cpu_kernels.few_rows(torch.randn(2, 0), torch.randn(4, 8), bias, segments=()),
                       bias.expand(2, 4))


@needs_kernel
def test_applies_only_to_float32_cpu_inference():
    x, w = torch.randn(4, 8), torch.randn(6, 8)
    with torch.no_grad():
        assert cpu_kernels.applies(x, w, 4)
        assert not cpu_kernels.applies(x.double(), w.double(), 4)
        assert not cpu_kernels.applies(x.bfloat16(), w.bfloat16(), 4)
        assert not cpu_kernels.applies(x, w.t(), 4)  # columns not contiguous
        assert not cpu_kernels.applies(x, w, cpu_kernels.MAX_ROWS + 1)
    assert not cpu_kernels.applies(x, w, 4)  # grad on: training keeps torch's products


@needs_kernel
def test_layout_paths_use_it_and_agree_with_torch(monkeypatch):
    """linear() and sub_linear() over kept runs go through the kernel (one call per sliced layer) and give
    torch's values up to rounding."""
    calls = []
    real = cpu_kernels.few_rows
    monkeypatch.setattr(cpu_kernels, "few_rows", lambda *a, **k: calls.append(1) or real(*a, **k))
    layer = torch.nn.Linear(48, 40)
    rows = kept(torch.tensor([0, 1, 2, 10, 11, 12, 30, 31]))
    cols = kept(torch.tensor([4, 5, 6, 7, 20, 21, 40, 41, 42]))
    x = torch.randn(5, 9)
    with torch.no_grad():
        got = sub_linear(x, layer, rows, cols)
        whole = layout.linear(torch.randn(6, 48), layer.weight, layer.bias)
    assert len(calls) == 2 and whole.shape == (6, 40)
    want = x.double() @ layer.weight.double()[rows.index][:, cols.index].t() + layer.bias.double()[rows.index]
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    prefix = sub_linear(x[:, :7].clone(), layer, 11, 7)  # prefixes: a view of the first rows, one segment
    with torch.no_grad():
        prefix_nograd = sub_linear(x[:, :7].clone(), layer, 11, 7)
    torch.testing.assert_close(prefix_nograd, prefix.detach(), rtol=1e-5, atol=1e-5)


def test_build_is_cached_and_atomic(tmp_path):
    if cpu_build.compiler() is None:
        pytest.skip("no C compiler")
    compiler = cpu_build.compiler()
    first = cpu_build.build(compiler, tmp_path)
    stamp = first.stat().st_mtime_ns
    assert cpu_build.build(compiler, tmp_path) == first and first.stat().st_mtime_ns == stamp  # reused
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary file left behind


@needs_kernel
def test_damaged_library_is_rebuilt(tmp_path):
    path = cpu_build.build(cpu_build.compiler(), tmp_path)
    path.write_bytes(b"not a library")
    lib = cpu_build.load(tmp_path)
    assert lib.ne_supported() == 1 and path.stat().st_size > 1000


def test_switched_off_by_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(cpu_build.ENV_SWITCH, "0")
    with pytest.raises(RuntimeError, match="NEMOTRON_ELASTIC_CPU_KERNELS=0"):
        cpu_build.load(tmp_path)
    assert not list(tmp_path.iterdir())  # nothing built


def test_failed_compile_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", "false")  # a "compiler" that fails
    monkeypatch.setattr(cpu_build, "compiler", lambda: "false")
    with pytest.raises(RuntimeError, match="false failed"):
        cpu_build.load(tmp_path)
    assert not list(tmp_path.iterdir())  # the temporary output is removed


@needs_kernel
@pytest.mark.parametrize("spec", [None, {"hidden": 24, "mlp": 32, "attention_heads": 2, "mamba_heads": 3,
                                         "mamba_head_dim": 3, "layers": [0, 1, 2, 4, 5]}])
def test_float32_decoding_through_the_kernel_equals_the_full_forward(spec, monkeypatch):
    """A float32 batched decode (ragged prefill, then one-token steps) of the parent and of a sliced
    sub-model (kept heads as runs) goes through the kernel and equals each row's float64 full forward pass
    within float32 rounding."""
    from test_hybrid import HYBRID, assert_float32_decode_equals_full_forward, build

    from nemotron_elastic.config.spec import SubnetSpec

    calls = []
    real = cpu_kernels.few_rows
    monkeypatch.setattr(cpu_kernels, "few_rows", lambda *a, **k: calls.append(1) or real(*a, **k))
    exact = build(**HYBRID)
    model = build(**HYBRID).float().eval()
    sub = None if spec is None else SubnetSpec.from_dict(spec, model.config)
    assert_float32_decode_equals_full_forward(model, exact, sub)
    assert calls, "the float32 decode did not use the kernel"


@needs_kernel
@settings(max_examples=60, deadline=None)
@given(b=st.integers(0, 5), g=st.integers(1, 3), r=st.integers(1, 3), p=st.integers(1, 20),
       n=st.integers(1, 70), skip=st.booleans(), half=st.booleans(), seed=st.integers(0, 2**16))
def test_ssm_step_matches_float64(b, g, r, p, n, skip, half, seed):
    """One step in place equals ssd_step in float64 (state and y), with x / B / C read as views of one
    packed projection (row strides), D or not, bfloat16 inputs on a float32 state."""
    from nemotron_elastic.model.ssd import ssd_step

    gen = torch.Generator().manual_seed(seed)
    h = g * r
    packed = torch.randn(b, h * p + 2 * g * n + 3, generator=gen)  # [x | B | C | spare]: strided views
    x = packed[:, : h * p].view(b, h, p)
    B = packed[:, h * p : h * p + g * n].view(b, g, n)
    C = packed[:, h * p + g * n : h * p + 2 * g * n].view(b, g, n)
    dt = torch.rand(b, h, generator=gen) + 0.05
    A = -torch.rand(h, generator=gen) - 0.1
    D = torch.randn(h, generator=gen) if skip else None
    if half:
        x, B, C = x.bfloat16(), B.bfloat16(), C.bfloat16()
    state = torch.randn(b, h, p, n, generator=gen)
    want_y, want_state = ssd_step(state.double(), x.double(), dt.double(), A.double(), B.double(), C.double(),
                                  D=None if D is None else D.double())
    with torch.no_grad():
        y = cpu_kernels.ssm_step(state, x, dt, A, B, C, D)
    torch.testing.assert_close(state.double(), want_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y.double(), want_y.double(), rtol=1e-5, atol=1e-4 * (1 + n) ** 0.5)


@needs_kernel
def test_ssd_step_takes_the_kernel_only_in_place_on_float32(monkeypatch):
    from nemotron_elastic.model.ssd import ssd_step

    calls = []
    real = cpu_kernels.ssm_step
    monkeypatch.setattr(cpu_kernels, "ssm_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    args = (torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3), torch.rand(2, 4), -torch.rand(4), torch.randn(2, 2, 5),
            torch.randn(2, 2, 5))
    with torch.no_grad():
        ssd_step(*[a.clone() for a in args], inplace=False)
        ssd_step(*[a.double() for a in args], inplace=True)
        assert not calls
        state = args[0].clone()
        _, new = ssd_step(state, *args[1:], inplace=True)
    assert calls == [1] and new is state
    ssd_step(args[0].clone(), *args[1:], inplace=True)  # grad mode on: torch's ops
    assert calls == [1]


@needs_kernel
@settings(max_examples=40, deadline=None)
@given(rows=st.integers(0, 12), groups=st.integers(1, 4), width=st.integers(1, 50), gated=st.booleans(),
       seed=st.integers(0, 2**16))
def test_rms_norm_matches_float64(rows, groups, width, gated, seed):
    """The norm kernel equals model/norm.py's torch ops in float64: plain RMSNorm and the gated group norm,
    inputs read as strided views."""
    from nemotron_elastic.model.norm import gated_group_rms_norm, rms_norm

    g = torch.Generator().manual_seed(seed)
    d = groups * width
    packed = torch.randn(rows, 2 * d + 5, generator=g)  # x and the gate as views of one projection
    x, z = packed[:, :d], packed[:, d + 3 : 2 * d + 3]
    weight = torch.randn(d, generator=g)
    if gated:
        want = gated_group_rms_norm(x.double(), z.double(), weight.double(), groups, 1e-5)
        got = cpu_kernels.rms_norm(x, weight, 1e-5, z=z, groups=groups)
    else:
        want = rms_norm(x.double(), weight.double(), 1e-5)
        got = cpu_kernels.rms_norm(x, weight, 1e-5)
    assert got.shape == x.shape and got.is_contiguous()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_norms_take_the_kernel_for_decoding_rows_only(monkeypatch):
    from nemotron_elastic.model.norm import gated_group_rms_norm, rms_norm

    calls = []
    real = cpu_kernels.rms_norm
    monkeypatch.setattr(cpu_kernels, "rms_norm", lambda *a, **k: calls.append(1) or real(*a, **k))
    w = torch.randn(8)
    with torch.no_grad():
        rms_norm(torch.randn(3, 1, 8), w, 1e-5)
        gated_group_rms_norm(torch.randn(3, 1, 8), torch.randn(3, 1, 8), w, 2, 1e-5)
        assert len(calls) == 2
        rms_norm(torch.randn(3, 1, 8), w, 1e-5, support=torch.ones(8))  # masked channels: torch's ops
        rms_norm(torch.randn(cpu_kernels.NORM_MAX_ROWS + 1, 8), w, 1e-5)  # a prefill: torch's ops
        rms_norm(torch.randn(3, 8).double(), w.double(), 1e-5)
        assert len(calls) == 2
    rms_norm(torch.randn(3, 8), w, 1e-5)  # grad mode: torch's ops
    assert len(calls) == 2


@needs_kernel
@settings(max_examples=40, deadline=None)
@given(b=st.integers(0, 5), c=st.integers(1, 40), k=st.integers(1, 5), picked=st.booleans(),
       use_bias=st.booleans(), use_counts=st.booleans(), seed=st.integers(0, 2**16))
def test_conv_step_matches_float64(b, c, k, picked, use_bias, use_counts, seed):
    """silu(conv) of one new input per row equals the float64 sum over [state | x]; a row fed a token has its
    state shifted to end with it, a row fed none keeps its state; kept channels picked from a larger weight."""
    g = torch.Generator().manual_seed(seed)
    full = c + 7
    weight = torch.randn(full, 1, k, generator=g)
    bias = torch.randn(full, generator=g) if use_bias else None
    channels = torch.randperm(full, generator=g)[:c] if picked else None
    state = torch.randn(b, c, k - 1, generator=g)
    x = torch.randn(b, c + 3, generator=g)[:, :c]  # rows at a stride
    counts = torch.randint(0, 2, (b,), generator=g) if use_counts else None
    before = state.double().clone()
    ch = torch.arange(c) if channels is None else channels
    w = weight.double()[ch, 0]  # (c, k)
    want = (torch.cat([before, x.double()[:, :, None]], -1) * w).sum(-1)
    if bias is not None:
        want = want + bias.double()[ch]
    want = torch.nn.functional.silu(want)
    with torch.no_grad():
        got = cpu_kernels.conv_step(state, x, weight, channels, bias, counts)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    fed = torch.ones(b, dtype=torch.bool) if counts is None else counts.bool()
    shifted = torch.cat([before, x.double()[:, :, None]], -1)[:, :, 1:]
    torch.testing.assert_close(state.double()[fed], shifted[fed], rtol=0, atol=0)
    torch.testing.assert_close(state.double()[~fed], before[~fed], rtol=0, atol=0)


def test_segments_of_column_runs():
    runs = kept(torch.tensor([2, 3, 4, 10, 11, 12, 30])).runs
    assert layout._segments(runs) == ((2, 0, 3), (10, 3, 3), (30, 6, 1))
    assert isinstance(Kept(torch.arange(0), ()), Kept) and layout._segments(()) == ()
    assert ctypes.sizeof(ctypes.c_int64) == 8


def test_old_builds_are_pruned(tmp_path):
    for i in range(6):
        stale = tmp_path / f"decode-{i:016x}.so"
        stale.write_bytes(b"old")
        os.utime(stale, (1000 + i, 1000 + i))
    cpu_build._prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"decode-{4:016x}.so", f"decode-{5:016x}.so"]


def test_an_unwritable_cache_falls_back_to_the_temp_dir(monkeypatch, tmp_path):
    if cpu_build.compiler() is None:
        pytest.skip("no C compiler")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("NEMOTRON_ELASTIC_CACHE", str(blocker))
    monkeypatch.setattr(cpu_build.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    try:
        lib = cpu_build.load()
    except RuntimeError as err:  # a CPU without AVX-512 still fails, but after the build
        assert "AVX-512" in str(err)
        lib = None
    built = list((tmp_path / "tmp").rglob("decode-*.so"))
    assert len(built) == 1 and (lib is None or lib.ne_supported() == 1)
