# SPDX-License-Identifier: Apache-2.0
"""Kernel choice (model/kernels.py): the SSD-through-simple-GLA mapping is exact against the reference scan
(checked with a naive float64 simple GLA standing in for fla-core's Triton kernel), and the selection logic
(torch never imports, auto falls back with one warning, required refuses) with fla-core mocked out only at
its import boundary."""

import functools
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

from nemotron_elastic.config.presets import get_preset
from nemotron_elastic.model import HybridLM
from nemotron_elastic.model.kernels import (
    TORCH,
    Kernels,
    _import_fla,
    fallback_bytes,
    matches_reference,
    select_kernels,
    ssd_via_gla,
    torch_conv,
)
from nemotron_elastic.model.ssd import ssd_chunked


def naive_gla(q, k, v, g, scale, initial_state=None, output_final_state=False):
    """fla's simple GLA, token by token: S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = scale * S_t^T q_t."""
    b, l, h, kd = q.shape
    s = torch.zeros(b, h, kd, v.shape[-1], dtype=torch.float64) if initial_state is None else initial_state.double()
    out = []
    for t in range(l):
        s = s * g[:, t].double().exp()[..., None, None] + k[:, t].double()[..., :, None] * v[:, t].double()[..., None, :]
        out.append(scale * torch.einsum("bhkv,bhk->bhv", s, q[:, t].double()))
    return torch.stack(out, 1).to(v.dtype), (s.to(initial_state.dtype if initial_state is not None else v.dtype)
                                             if output_final_state else None)


GLA = Kernels("naive-gla", functools.partial(ssd_via_gla, naive_gla), torch_conv)


def inputs(dtype=torch.float64, b=2, l=37, h=6, p=5, g=3, n=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, h, p, generator=gen, dtype=dtype)
    dt = F.softplus(torch.randn(b, l, h, generator=gen, dtype=dtype))
    A = -torch.rand(h, generator=gen, dtype=dtype) - 0.1
    B, C = torch.randn(b, l, g, n, generator=gen, dtype=dtype), torch.randn(b, l, g, n, generator=gen, dtype=dtype)
    return x, dt, A, B, C, torch.randn(h, generator=gen, dtype=dtype), torch.randn(b, h, p, n, generator=gen, dtype=dtype)


def test_ssd_through_simple_gla_equals_the_reference_scan():
    x, dt, A, B, C, D, state = inputs()
    y, final = GLA.ssd(x, dt, A, B, C, 16, D=D, initial_state=state, return_final_state=True)
    ref_y, ref_final = ssd_chunked(x, dt, A, B, C, 16, D=D, initial_state=state, return_final_state=True)
    torch.testing.assert_close(y, ref_y, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(final, ref_final, rtol=1e-10, atol=1e-10)
    assert torch.equal(GLA.ssd(x, dt, A, B, C, 16), GLA.ssd(x, dt, A, B, C, 16, D=None))


def test_a_model_through_the_gla_mapping_gives_the_same_logits():
    model = HybridLM(get_preset("micro-hybrid"))
    model.init_weights(torch.Generator().manual_seed(0))
    ids = torch.randint(0, model.config.vocab_size, (2, 19), generator=torch.Generator().manual_seed(1))
    ref = model(ids)
    model.set_kernels(GLA)
    torch.testing.assert_close(model(ids), ref, rtol=1e-5, atol=1e-5)


def test_the_reference_check_accepts_a_right_kernel_and_rejects_a_wrong_one():
    cpu = torch.device("cpu")
    assert matches_reference(GLA, cpu) is None
    wrong = Kernels("wrong", lambda *a, **k: tuple(t * 1.1 for t in ssd_chunked(*a, **k)), torch_conv)
    assert matches_reference(wrong, cpu).startswith("ssd output differs")
    bad_conv = Kernels("bad-conv", ssd_chunked, lambda x, w, b: torch_conv(x, w, None))
    assert matches_reference(bad_conv, cpu).startswith("conv differs")


def test_torch_never_imports_a_kernel_library():
    def load():
        raise AssertionError("the kernel library was imported")

    assert select_kernels("torch", torch.device("cuda"), load=load) is TORCH
    assert select_kernels("auto", torch.device("cpu"), load=load) is TORCH  # CPU: nothing to fuse


def test_auto_falls_back_with_one_warning_and_required_refuses(monkeypatch):
    monkeypatch.setitem(sys.modules, "fla", None)  # `import fla...` raises ImportError: the only mock
    cuda = torch.device("cuda")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert select_kernels("auto", cuda, lambda: " (about 2.0 GiB per Mamba layer)", _import_fla) is TORCH
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "fla-core does not load (ModuleNotFoundError" in text and "about 2.0 GiB per Mamba layer" in text
    with pytest.raises(ValueError, match=r"^kernels: required, but the fused kernels are not usable: fla-core"):
        select_kernels("required", cuda, load=_import_fla)
    with pytest.raises(ValueError, match="^kernels: required needs a CUDA device, the run is on cpu"):
        select_kernels("required", torch.device("cpu"))
    with pytest.raises(ValueError, match="^kernels: expected auto, required or torch"):
        select_kernels("fast", cuda)


class _RefusingBackward(torch.autograd.Function):
    """Identity forward, a backward that raises: what fla-core 0.6 does on Hopper with Triton 3.4-3.7.0."""

    @staticmethod
    def forward(ctx, y):
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("Triton >= 3.4.0 and < 3.7.1 on Hopper GPUs produces incorrect results")


def _refusing_ssd(*args, **kwargs):
    y, state = ssd_chunked(*args, **kwargs)
    return _RefusingBackward.apply(y), state


def _wrong_grad_ssd(x, *args, **kwargs):
    y, state = ssd_chunked(x, *args, **kwargs)
    return y + 10 * (x - x.detach()).to(y.dtype), state  # the same forward, another gradient for x


def test_the_reference_check_covers_the_backward():
    cpu = torch.device("cpu")
    wrong_grad = Kernels("wrong-grad", _wrong_grad_ssd, torch_conv)
    assert matches_reference(wrong_grad, cpu).startswith("ssd grad x differs")
    with pytest.raises(RuntimeError, match="Hopper"):
        matches_reference(Kernels("refusing", _refusing_ssd, torch_conv), cpu)
    with torch.inference_mode():  # a model's first forward on CUDA may be inside inference mode (serving)
        assert matches_reference(GLA, cpu) is None
        assert matches_reference(wrong_grad, cpu).startswith("ssd grad x")


def test_a_kernel_failing_its_backward_falls_back_or_is_refused():
    refusing = Kernels("refusing", _refusing_ssd, torch_conv)
    on_cpu = lambda kernels, device: matches_reference(kernels, torch.device("cpu"))  # noqa: E731
    cuda = torch.device("cuda")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert select_kernels("auto", cuda, load=lambda: refusing, check=on_cpu) is TORCH
    assert len(caught) == 1
    assert "fla-core fails on this GPU (RuntimeError: Triton >= 3.4.0" in str(caught[0].message)
    with pytest.raises(ValueError, match=r"^kernels: required, .* fla-core fails on this GPU \(RuntimeError"):
        select_kernels("required", cuda, load=lambda: refusing, check=on_cpu)
    assert select_kernels("required", cuda, load=lambda: GLA, check=on_cpu) is GLA  # a right kernel is kept


def test_fallback_estimate_grows_with_the_context():
    small, large = fallback_bytes(1, 4096, 128, 64, 128, 128), fallback_bytes(1, 49152, 128, 64, 128, 128)
    assert large == 12 * small
    assert 1 << 30 < large < 64 << 30  # GiBs per layer at 49K: the reason the kernels matter


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("causal, with_mask", [(True, False), (False, True), (False, False)])
def test_sdpa_sharing_kv_heads_equals_repeating_them(causal, with_mask, dtype):
    """SDPA's own GQA (`enable_gqa`, the CUDA path) gives exactly the forward of K/V repeated per query head
    (the CPU path), and its gradients to float rounding."""
    from nemotron_elastic.model.attention import attend

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, h, 9, 8, generator=gen).to(dtype).requires_grad_() for h in (6, 2, 2))
    mask = torch.rand(9, 9, generator=gen) > 0.3 if with_mask else None
    if mask is not None:
        mask.fill_diagonal_(True)
    native = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
    ours = attend(q, k, v, mask, causal)  # on the CPU: the repeated path
    assert torch.equal(ours, native)
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 5e-2}[dtype]
    for a, b in zip(torch.autograd.grad(ours.sum(), (q, k, v)), torch.autograd.grad(native.sum(), (q, k, v))):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
