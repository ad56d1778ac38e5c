# SPDX-License-Identifier: Apache-2.0
"""The fused Mamba2 decoding step (model/cpu_kernels.py `mamba_step`, model/mamba2.py `_fused_step`): the
conv, the step sizes, the SSM step and the gated norm in one call equal their float64 compositions on random
shapes, kept channels, rows fed nothing and step sizes on both sides of softplus' threshold and dt_min; and
a float32 batched decode of the parent and of a sliced sub-model takes it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from nemotron_elastic.model import cpu_kernels
from nemotron_elastic.model.norm import gated_group_rms_norm
from nemotron_elastic.model.ssd import ssd_step

needs_kernel = pytest.mark.skipif(
    cpu_kernels.library() is None, reason=f"kernel unavailable: {cpu_kernels.unavailable_reason()}"
)


def reference(proj, conv_state, weight, channels, bias, counts, dt_bias, dt_min, a, d, ssm_state, norm_w, eps):
    """The float64 composition: silu(conv), clamp(softplus), ssd_step, gated group norm -> (y, conv, ssm)."""
    b, h, p, n = ssm_state.shape
    conv_dim, inner = conv_state.shape[1], h * p
    g = (conv_dim - inner) // (2 * n)
    proj = proj.double()
    z, xbc, dt = proj[:, :inner], proj[:, inner : inner + conv_dim], proj[:, inner + conv_dim :]
    ch = torch.arange(conv_dim) if channels is None else channels
    full = torch.cat([conv_state.double(), xbc[:, :, None]], -1)  # (b, C, K)
    out = (full * weight.double()[ch, 0]).sum(-1) + (0 if bias is None else bias.double()[ch])
    xbc = F.silu(out)
    fed = torch.ones(b, dtype=torch.bool) if counts is None else counts == 1
    conv = torch.where(fed[:, None, None], full[:, :, 1:], conv_state.double())
    step = F.softplus(dt + dt_bias.double()).clamp(min=dt_min) * fed[:, None].double()
    xs, bm, cm = xbc[:, :inner], xbc[:, inner : inner + g * n], xbc[:, inner + g * n :]
    y, ssm = ssd_step(ssm_state.double(), xs.view(b, h, p), step, a.double(), bm.view(b, g, n), cm.view(b, g, n),
                      None if d is None else d.double())  # fmt: skip
    return gated_group_rms_norm(y.reshape(b, inner), z, norm_w.double(), g, eps), conv, ssm


@needs_kernel
@settings(max_examples=50, deadline=None)
@given(b=st.integers(0, 5), g=st.integers(1, 2), r=st.integers(1, 3), p=st.integers(1, 9), n=st.integers(1, 20),
       k=st.integers(2, 4), picked=st.booleans(), use_bias=st.booleans(), use_counts=st.booleans(),
       use_d=st.booleans(), dt_scale=st.sampled_from([0.5, 30.0]), seed=st.integers(0, 2**16))  # fmt: skip
def test_mamba_step_matches_float64(b, g, r, p, n, k, picked, use_bias, use_counts, use_d, dt_scale, seed):
    gen = torch.Generator().manual_seed(seed)
    h = g * r
    inner = h * p
    conv_dim = inner + 2 * g * n
    full = conv_dim + 5  # the parent's conv channels; the kept ones picked from them
    weight, bias = torch.randn(full, 1, k, generator=gen), torch.randn(full, generator=gen) if use_bias else None
    channels = torch.randperm(full, generator=gen)[:conv_dim] if picked else None
    proj = torch.randn(b, inner + conv_dim + h + 3, generator=gen)[:, : inner + conv_dim + h]  # rows at a stride
    proj[:, inner + conv_dim :] *= dt_scale  # large raw steps pass softplus' threshold of 20
    conv_state, ssm_state = torch.randn(b, conv_dim, k - 1, generator=gen), torch.randn(b, h, p, n, generator=gen)
    counts = torch.randint(0, 2, (b,), generator=gen) if use_counts else None
    dt_bias, a = torch.randn(h, generator=gen), -torch.rand(h, generator=gen) - 0.1
    d = torch.randn(h, generator=gen) if use_d else None
    norm_w = torch.randn(inner, generator=gen)
    args = (weight, channels, bias, counts, dt_bias, 0.05, a, d)
    want_y, want_conv, want_ssm = reference(proj, conv_state, *args, ssm_state, norm_w, 1e-5)
    with torch.no_grad():
        got = cpu_kernels.mamba_step(proj, conv_state, *args, ssm_state, norm_w, 1e-5)
    assert got.shape == (b, inner) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want_y, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(conv_state.double(), want_conv, rtol=0, atol=0)  # shifted in place (or kept)
    torch.testing.assert_close(ssm_state.double(), want_ssm, rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("spec", [None, {"hidden": 24, "mlp": 32, "attention_heads": 2, "mamba_heads": 3,
                                         "mamba_head_dim": 3, "layers": [0, 1, 2, 4, 5]}])
def test_a_float32_batched_decode_takes_the_fused_step(spec, monkeypatch):
    """The one-token steps of a float32 batch (rows at different positions after a ragged prefill) go
    through `mamba_step` and equal each row's float64 full forward within float32 rounding."""
    from test_hybrid import HYBRID, build, decode_in_steps

    from nemotron_elastic.config.spec import SubnetSpec

    calls = []
    real = cpu_kernels.mamba_step
    monkeypatch.setattr(cpu_kernels, "mamba_step", lambda *a, **kw: calls.append(a[0].shape[0]) or real(*a, **kw))
    exact, model = build(**HYBRID), build(**HYBRID).float().eval()
    sub = None if spec is None else SubnetSpec.from_dict(spec, model.config)
    gen = torch.Generator().manual_seed(5)
    seqs = [torch.randint(0, 97, (n,), generator=gen).tolist() for n in (9, 11, 8)]
    prompts = (3, 5, 2)  # a ragged prefill (a packed step), then 6 one-token steps at different positions
    steps = [[s[:n] for s, n in zip(seqs, prompts)]] + [[s[n + t : n + t + 1] for s, n in zip(seqs, prompts)]
                                                         for t in range(6)]
    got = decode_in_steps(model, steps, sub)
    with torch.no_grad():
        for b, s in enumerate(seqs):
            torch.testing.assert_close(got[b].double(), exact(torch.tensor([s]), subnet=sub)[0], rtol=0, atol=2e-5)
    kept = range(len(model.layers)) if sub is None else sub.layers
    mamba_layers = sum(1 for i in kept if model.layers[i].block_type == "M")
    assert calls == [3] * (mamba_layers * 6)  # every decoding step of every Mamba layer, all three rows
