# SPDX-License-Identifier: Apache-2.0
"""Kept indices as runs (model/layout.py `kept`, `_linear_by_runs`): the progressions give back exactly the
indices, the decoding matmuls on strided weight views equal the gathered weight's product (float64), and
the modules work the runs out once per sub-model for inference only."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nemotron_elastic.config.presets import get_preset
from nemotron_elastic.model import HybridLM
from nemotron_elastic.model.layout import Kept, _linear_by_runs, group_prefix, kept, mamba_indices, sub_linear
from nemotron_elastic.subnet.uniform import spec_at_ratio


def expand(k: Kept) -> list[int]:
    return [s + i * step + j for s, length, count, step in k.runs
            for i in range(count) for j in range(length)]


indices = st.lists(st.integers(0, 50), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(values=indices, ordered=st.booleans())
def test_runs_give_back_the_indices(values, ordered):
    index = torch.tensor(sorted(set(values)) if ordered else values)
    k = kept(index)
    assert expand(k) == index.tolist() and k.index is index
    assert all(length >= 1 and count >= 1 and (count == 1 or step > 0) for _, length, count, step in k.runs)


def test_a_grouped_prefix_is_one_progression_per_segment():
    # 16 heads of 8 channels in 4 groups, 2 heads kept per group: z and x continue one progression
    # (every 32 rows, 16 kept), then B|C and the first dt run are contiguous, then the other dt runs
    sel = kept(mamba_indices(16, 8, 4, 6, 2, 8).in_proj)
    assert sel.runs == ((0, 16, 8, 32), (256, 50, 1, 0), (308, 2, 3, 4))


def _as_index(sel, size: int) -> torch.Tensor:
    if isinstance(sel, int):
        return torch.arange(sel)
    return sel.index if isinstance(sel, Kept) else sel


def _select(draw, size: int):
    kind = draw(st.sampled_from(["prefix", "indices", "kept"]))
    if kind == "prefix":
        return draw(st.integers(1, size))
    values = draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=2 * size))
    index = torch.tensor(sorted(set(values)) if draw(st.booleans()) else values)
    return index if kind == "indices" else kept(index)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), tokens=st.integers(1, 8), bias=st.booleans())
def test_matmuls_on_runs_equal_the_gathered_weight(data, tokens, bias):
    layer = nn.Linear(24, 30, bias=bias).double()
    rows, cols = _select(data.draw, 30), _select(data.draw, 24)
    r, c = _as_index(rows, 30), _as_index(cols, 24)
    x = torch.randn(tokens, 1, len(c), dtype=torch.float64)
    want = x @ layer.weight[r][:, c].T + (layer.bias[r] if bias else 0)
    with torch.no_grad():
        for batched in (True, False):  # an accelerator's form (one matmul per progression) and a CPU's (per run)
            got = _linear_by_runs(x, layer, rows, cols, batched=batched)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(sub_linear(x, layer, rows, cols), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sub_linear(x, layer, rows, cols), want, rtol=1e-12, atol=1e-12)  # gather path


def test_runs_as_weight_times_x_equal_the_gathered_weight(monkeypatch):
    """The CPU's W @ x^T form (8..64 rows, `linear`) on runs, every weight size let through: the same
    products, float32 rounding apart."""
    from nemotron_elastic.model import layout

    monkeypatch.setattr(layout, "MIN_WEIGHT", {torch.float32: 1})
    gen = torch.Generator().manual_seed(0)
    layer = nn.Linear(40, 48)

    def select(size: int, trial: int):
        if trial % 3 == 0:
            return size - trial % 7
        if trial % 3 == 1:  # a prefix per group: one progression of several runs
            return kept(group_prefix(size, 4, 1 + trial % (size // 4)))
        return kept(torch.randperm(size, generator=gen)[: 4 + trial % 30].sort().values)

    for trial in range(40):
        rows, cols = select(48, trial), select(40, trial // 2)
        r, c = _as_index(rows, 48), _as_index(cols, 40)
        x = torch.randn(8 + trial, len(c), generator=gen)
        want = x @ layer.weight[r][:, c].T + layer.bias[r]
        with torch.no_grad():
            for batched in (True, False):
                got = _linear_by_runs(x, layer, rows, cols, batched=batched)
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_runs_are_worked_out_once_per_sub_model_and_only_for_inference():
    model = HybridLM(get_preset("micro-hybrid")).double()
    model.init_weights(torch.Generator().manual_seed(0))
    spec = spec_at_ratio(model.config, 0.5)
    # decoding-sized (6 tokens): the runs path
    ids = torch.randint(0, model.config.vocab_size, (1, 6), generator=torch.Generator().manual_seed(1))
    mixers = [b.mixer for b in model.layers if hasattr(b.mixer, "_kept")]
    trained = model(ids, subnet=spec)
    assert all(not m._kept for m in mixers)  # with grad: plain indices, nothing kept
    with torch.no_grad():
        first = model(ids, subnet=spec)
        kept_now = [dict(m._kept) for m in mixers]
        again = model(ids, subnet=spec)
    assert any(kept_now) and [dict(m._kept) for m in mixers] == kept_now  # reused, not rebuilt
    assert all(v is kept_now[i][k] for i, m in enumerate(mixers) for k, v in m._kept.items())
    torch.testing.assert_close(first, trained.detach(), rtol=1e-10, atol=1e-10)
    assert torch.equal(first, again)
