# SPDX-License-Identifier: Apache-2.0
"""KD losses: the closed form, chunked == unchunked (values and gradients), CE."""

import pytest
import torch
import torch.nn.functional as F

from nemotron_elastic.train.losses import cross_entropy_chunked, kl_div, kl_div_chunked


def test_kl_matches_closed_form_for_gaussian_free_case():
    """Two categorical distributions with known probabilities: KL = sum p log(p/q)."""
    p = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    q = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)
    expected = float((p * (p / q).log()).sum())
    got = float(kl_div(q.log()[None], p.log()[None]))
    assert got == pytest.approx(expected, rel=1e-6)
    assert float(kl_div(p.log()[None], p.log()[None])) == pytest.approx(0.0, abs=1e-7)
    # temperature: T^2 * KL of the tempered distributions
    t = 2.0
    pt, qt = F.softmax(p.log() / t, -1), F.softmax(q.log() / t, -1)
    assert float(kl_div(q.log()[None], p.log()[None], t)) == pytest.approx(t * t * float((pt * (pt / qt).log()).sum()), rel=1e-6)


def test_kl_equals_torch_kl_div():
    s, t = torch.randn(4, 7, 33), torch.randn(4, 7, 33)
    ref = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="none").sum(-1).mean()
    assert torch.allclose(kl_div(s, t), ref, atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 5, 7, 1000])
@pytest.mark.parametrize("masked", [False, True])
def test_chunked_equals_unchunked(chunk, masked):
    torch.manual_seed(0)
    s_h = torch.randn(3, 7, 8, dtype=torch.float64, requires_grad=True)
    s_w = torch.randn(50, 8, dtype=torch.float64, requires_grad=True)
    t_h, t_w = torch.randn(3, 7, 12, dtype=torch.float64), torch.randn(50, 12, dtype=torch.float64)
    mask = (torch.rand(3, 7) > 0.3) if masked else None
    ref = kl_div(s_h @ s_w.T, t_h @ t_w.T, 1.5, mask)
    g_ref = torch.autograd.grad(ref, (s_h, s_w))
    got = kl_div_chunked(s_h, s_w, t_h, t_w, 1.5, chunk, mask)
    g_got = torch.autograd.grad(got, (s_h, s_w))
    assert abs(float(got - ref)) < 1e-6
    for a, b in zip(g_got, g_ref):
        assert (a - b).abs().max() < 1e-6


def test_cross_entropy_chunked():
    torch.manual_seed(0)
    h = torch.randn(2, 9, 8, requires_grad=True)
    w = torch.randn(40, 8, requires_grad=True)
    y = torch.randint(0, 40, (2, 9))
    y[0, 0] = -100
    ref = F.cross_entropy((h @ w.T).flatten(0, 1), y.flatten(), ignore_index=-100)
    got = cross_entropy_chunked(h, w, y, chunk_size=4)
    assert abs(float(got - ref)) < 1e-5
    ga, gb = torch.autograd.grad(got, (h, w)), torch.autograd.grad(ref, (h, w))
    assert all((a - b).abs().max() < 1e-5 for a, b in zip(ga, gb))
