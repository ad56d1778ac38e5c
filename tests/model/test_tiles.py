# SPDX-License-Identifier: Apache-2.0
"""The tiled weight layout for serving (model/tiles.py, csrc/decode.c `ne_tiled_f32`): tile / untile round
trips; the plan of kept rows; the kernel and torch's form against float64 references on random row runs and
column segments; a tiled model equal to the row-major one (parent, sliced and per-row masked sub-models,
batched decoding through the kernel); the weight parameter gone while tiled and back after; the serving
engine tiling a float32 model."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nemotron_elastic.model import cpu_kernels, tiles
from nemotron_elastic.model.layout import kept

needs_kernel = pytest.mark.skipif(
    cpu_kernels.library() is None, reason=f"kernel unavailable: {cpu_kernels.unavailable_reason()}"
)
SUB = {
    "hidden": 24,
    "mlp": 32,
    "attention_heads": 2,
    "mamba_heads": 3,
    "mamba_head_dim": 3,
    "layers": [0, 1, 2, 4, 5],
}


@settings(max_examples=40, deadline=None)
@given(r=st.integers(1, 70), c=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_tile_round_trip(r, c, seed):
    w = torch.randn(r, c, generator=torch.Generator().manual_seed(seed))
    t = tiles.tile(w)
    assert t.shape == (-(-r // tiles.TILE), c, tiles.TILE) and t.is_contiguous()
    for row in (0, r - 1, r // 2):
        assert torch.equal(t[row // tiles.TILE, :, row % tiles.TILE], w[row])
    assert torch.equal(tiles.untile(t, r), w)
    assert not t.permute(0, 2, 1).reshape(-1, c)[r:].any()  # the padding rows are zero


def random_case(draw_seed: int, r: int, c: int):
    """Random kept rows (as runs) and column segments of an (r, c) weight."""
    g = torch.Generator().manual_seed(draw_seed)
    rows = torch.randperm(r, generator=g)[: max(1, r // 2)].sort().values
    runs = kept(rows).runs
    cols = torch.randperm(c, generator=g)[: max(1, c // 2)].sort().values.tolist()
    segments = []
    for offset, col in enumerate(cols):  # contiguous columns merge into one segment
        if segments and segments[-1][0] + segments[-1][2] == col:
            segments[-1] = (segments[-1][0], segments[-1][1], segments[-1][2] + 1)
        else:
            segments.append((col, offset, 1))
    return rows, runs, tuple(segments), torch.tensor(cols)


def test_plan_lists_the_kept_rows_in_order():
    runs = kept(torch.tensor([0, 1, 2, 15, 16, 17, 40, 41, 60])).runs
    p = tiles.plan(runs)
    assert p.index.tolist() == [0, 1, 2, 15, 16, 17, 40, 41, 60] and p.rows == 9
    assert p.tiles.tolist() == [0, 1, 2, 3]
    units = [tuple(p.units[4 * i : 4 * i + 4]) for i in range(p.count)]
    assert units[:3] == [(0, 0, 3, 0), (0, 15, 1, 3), (1, 0, 2, 4)]  # a run split where a tile ends


@settings(max_examples=50, deadline=None)
@given(
    m=st.integers(1, 140),
    r=st.integers(1, 60),
    c=st.integers(1, 50),
    use_bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_linear_matches_float64(m, r, c, use_bias, seed):
    """float32 (the kernel up to TILED_MAX_ROWS rows, in passes of 16 rows and one pass for the rest,
    torch's form above) and float64 (torch's form) against float64."""
    g = torch.Generator().manual_seed(seed)
    w, bias = torch.randn(r, c, generator=g), torch.randn(r, generator=g) if use_bias else None
    rows, runs, segments, cols = random_case(seed, r, c)
    x = torch.randn(m, len(cols), generator=g)
    want = x.double() @ w.double()[rows][:, cols].t() + (0 if bias is None else bias.double()[rows])
    with torch.no_grad():
        got32 = tiles.linear(x, tiles.tile(w), bias, runs, segments)
        got64 = tiles.linear(
            x.double(), tiles.tile(w.double()), None if bias is None else bias.double(), runs, segments
        )
    torch.testing.assert_close(got32.double(), want, rtol=0, atol=1e-4 * (1 + c**0.5))
    torch.testing.assert_close(got64, want, rtol=0, atol=1e-10)


@needs_kernel
@pytest.mark.parametrize("seed", [0, 1])
def test_a_rows_outputs_are_the_same_bits_alone_and_in_any_batch(seed):
    """The kernel sums every output in one order whatever the row count (1-4 rows take tiles four at a time,
    5-8 two at a time, more one at a time: interleaved chains, not reordered sums), so a request decodes the
    same tokens alone or next to others, even where logits nearly tie."""
    g = torch.Generator().manual_seed(seed)
    w, bias = torch.randn(203, 70, generator=g), torch.randn(203, generator=g)
    _, runs, segments, cols = random_case(seed, 203, 70)
    x = torch.randn(20, len(cols), generator=g)
    t = tiles.tile(w)
    with torch.no_grad():
        alone = torch.cat([tiles.linear(x[i : i + 1], t, bias, runs, segments) for i in range(20)])
        for m in range(1, 21):
            assert torch.equal(tiles.linear(x[:m], t, bias, runs, segments), alone[:m]), m


@needs_kernel
def test_few_float32_rows_take_the_kernel(monkeypatch):
    calls = []
    real = cpu_kernels.tiled
    monkeypatch.setattr(cpu_kernels, "tiled", lambda *a, **k: calls.append(a[0].shape[0]) or real(*a, **k))
    t, runs, segments = tiles.tile(torch.randn(40, 20)), ((0, 40, 1, 0),), ((0, 0, 20),)
    with torch.no_grad():
        for m in (1, 7, 16, 17, cpu_kernels.TILED_MAX_ROWS, cpu_kernels.TILED_MAX_ROWS + 1):
            tiles.linear(torch.randn(m, 20), t, None, runs, segments)
        tiles.linear(torch.randn(2, 20).double(), t.double(), None, runs, segments)
    tiles.linear(torch.randn(2, 20), t, None, runs, segments)  # grad enabled: torch's form
    assert calls == [1, 7, 16, 17, cpu_kernels.TILED_MAX_ROWS]


def models(tie: bool = True):
    from test_hybrid import HYBRID, build

    config = {**HYBRID, "tie_word_embeddings": tie}
    return build(**config).eval(), build(**config).eval().use_tiled_weights()


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("spec", [None, SUB])
def test_a_tiled_model_equals_the_row_major_one(spec, tie):
    """float64: the same logits for a full forward and for greedy generation, parent and sub-model; an
    untied LM head is tiled too (a tied one, also the embedding table, stays row-major)."""
    from nemotron_elastic.config.spec import SubnetSpec

    plain, tiled = models(tie)
    assert (tiled.lm_head.tiles is None) == tie
    sub = None if spec is None else SubnetSpec.from_dict(spec, plain.config)
    torch.testing.assert_close(tiled.head_weight(sub), plain.head_weight(sub), rtol=0, atol=0)
    ids = torch.randint(0, 97, (3, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(tiled(ids, subnet=sub), plain(ids, subnet=sub), rtol=0, atol=1e-10)
        assert torch.equal(
            tiled.generate(ids[:, :4], 6, subnet=sub), plain.generate(ids[:, :4], 6, subnet=sub)
        )


@pytest.mark.parametrize("tie", [True, False])
def test_weights_leave_and_come_back(tie):
    from nemotron_elastic.config.spec import SubnetSpec
    from nemotron_elastic.subnet.slicing import slice_model

    plain, tiled = models(tie)
    layer = tiled.layers[0].mixer.in_proj
    with pytest.raises(AttributeError):
        layer.weight  # noqa: B018 (a read of the moved weight fails loudly)
    if tiled.config.tie_word_embeddings:  # the shared table stays shared (it moved to its own storage)
        assert tiled.lm_head.weight is tiled.embeddings.weight
    saved = tiled.state_dict()  # the row-major weights, as saved checkpoints hold them
    assert saved.keys() == plain.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in plain.state_dict().items())
    with pytest.raises(ValueError, match="tiles"):
        slice_model(tiled, SubnetSpec.from_dict(SUB, tiled.config))
    tiled.use_tiled_weights(False)
    want = plain.state_dict()
    got = tiled.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert all(m.tiles is None for m in tiled.modules() if hasattr(m, "tiles"))


def test_mixed_budgets_batched_on_tiles_equal_each_request_alone():
    """float64 (torch's form): mixed budgets in one batch (per-row masks inside the widest sub-model, as the
    server runs them) on a tiled model; each request's greedy output equals its own row-major run."""
    from nemotron_elastic.config.spec import SubnetSpec
    from nemotron_elastic.model.batcher import ContinuousBatcher, SequenceRequest

    plain, tiled = models()
    specs = [None, SubnetSpec.from_dict(SUB, plain.config)]
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, 97, (n,), generator=g).tolist() for n in (5, 8, 3, 6, 7)]
    batcher, out, ids = ContinuousBatcher(tiled, mixed="widest"), {}, []
    with torch.no_grad():
        for i, p in enumerate(prompts):
            ids.append(batcher.submit(SequenceRequest(p, 3 + i, specs[i % 2], 0.0)))
        done = 0
        while done < len(prompts):
            for event in batcher.step():
                if event.token is not None:
                    out.setdefault(event.rid, []).append(event.token)
                done += event.finish is not None
        for i, p in enumerate(prompts):
            want = plain.generate(torch.tensor([p]), 3 + i, subnet=specs[i % 2])[0, len(p) :].tolist()
            assert out[ids[i]] == want


@needs_kernel
@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("spec", [None, SUB])
def test_float32_decoding_on_tiles_equals_the_full_forward(spec, tie, monkeypatch):
    """A float32 batched decode (ragged prefill, then one-token steps) of a tiled model goes through the
    kernel and equals each row's float64 full forward pass within float32 rounding; an untied LM head
    through the kernel too."""
    from test_hybrid import HYBRID, assert_float32_decode_equals_full_forward, build

    from nemotron_elastic.config.spec import SubnetSpec

    calls = []
    real = cpu_kernels.tiled
    monkeypatch.setattr(cpu_kernels, "tiled", lambda *a, **k: calls.append(a[1].data_ptr()) or real(*a, **k))
    config = {**HYBRID, "tie_word_embeddings": tie}
    exact = build(**config)
    model = build(**config).float().eval().use_tiled_weights()
    sub = None if spec is None else SubnetSpec.from_dict(spec, model.config)
    assert_float32_decode_equals_full_forward(model, exact, sub)
    assert calls, "the float32 decode did not use the tiled kernel"
    if not tie:  # the untied head's product took the kernel too
        assert model.lm_head.tiles.data_ptr() in calls


def test_the_engine_serves_float32_from_tiles(micro_parent):
    """The serving engine loads a float32 model with its block weights in tiles when the kernels are built
    (row-major otherwise, and for other dtypes)."""
    from nemotron_elastic.serve.engine import ManyInOneEngine

    for dtype, want in (("float32", cpu_kernels.library() is not None), ("bfloat16", False)):
        engine = ManyInOneEngine(micro_parent, dtype=dtype)
        try:
            layers = [m for m in engine.model.layers.modules() if hasattr(m, "tiles")]
            assert layers and all((m.tiles is not None) == want for m in layers)
            assert len(engine.generate([5, 6, 7], max_new_tokens=3, ignore_eos=True).token_ids) == 3
        finally:
            engine.close()
