# SPDX-License-Identifier: Apache-2.0
"""The native model on its own: meta init, parameter counts, caches, generation, per-layer widths."""

import pytest
import torch

from nemotron_elastic.config.model import ModelConfig
from nemotron_elastic.model import HybridLM

HYBRID = dict(
    pattern="M-*M-*", vocab_size=97, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
    intermediate_size=48, mamba_num_heads=6, mamba_head_dim=4, mamba_n_groups=3, ssm_state_size=5, chunk_size=4,
)
LLAMA = dict(
    family="llama", pattern="*-*-", vocab_size=97, hidden_size=32, num_attention_heads=6, num_key_value_heads=2,
    head_dim=8, rope_theta=1000.0, intermediate_size=40, mlp_gated=True, mlp_activation="silu",
    tie_word_embeddings=True,
)

# Llama-layout families with their attention extras and scaled RoPE (the sequences here reach 15 tokens).
QWEN2 = dict(LLAMA, family="qwen2", attention_bias=True, attention_out_bias=False)
QWEN3 = dict(LLAMA, family="qwen3", attention_qk_norm=True)
MISTRAL = dict(LLAMA, family="mistral", sliding_window=4)
YARN = dict(LLAMA, rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4,
                                    "rope_theta": 1000.0})
LONGROPE = dict(LLAMA, rope_parameters={"rope_type": "longrope", "short_factor": [1.0, 1.2, 1.5, 2.0],
                                        "long_factor": [2.0, 3.0, 4.0, 5.0], "factor": 2.0,
                                        "original_max_position_embeddings": 64,  # the short factors
                                        "rope_theta": 1000.0})
FAMILIES = {
    "qwen2": QWEN2, "qwen3": QWEN3, "mistral-window": MISTRAL, "llama-yarn": YARN, "llama-longrope": LONGROPE,
}  # fmt: skip


def build(dtype=torch.float64, seed=0, **kw) -> HybridLM:
    cfg = ModelConfig(**kw)
    with torch.device("meta"):
        model = HybridLM(cfg)
    model.to_empty(device="cpu")
    model.init_weights(torch.Generator().manual_seed(seed))
    # move A_log / D / norms away from their init so that every term of the forward matters
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("A_log", ".D", "dt_bias", "norm.weight", "conv1d.bias")):
                p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
    return model.to(dtype).eval()


def decode_in_steps(model, steps: list[list[list[int]]], subnet=None) -> list[torch.Tensor]:
    """Feed a BatchCache step by step (each step: every row's tokens, ragged, [] for none) -> each row's
    logits over all the tokens it was fed, (n_b, V)."""
    rows = len(steps[0])
    cache, got = model.new_batch_cache(rows), [[] for _ in range(rows)]
    with torch.no_grad():
        for pieces in steps:
            x = torch.zeros(rows, max(len(p) for p in pieces), dtype=torch.long)
            for b, p in enumerate(pieces):
                x[b, : len(p)] = torch.tensor(p, dtype=torch.long)
            logits = model(x, cache=cache, counts=torch.tensor([len(p) for p in pieces]), subnet=subnet)
            for b, p in enumerate(pieces):
                got[b].append(logits[b, : len(p)])
    return [torch.cat(g) for g in got]


def assert_float32_decode_equals_full_forward(model, exact, subnet=None) -> None:
    """A float32 `model`'s batched decode of 3 rows (a ragged 3-token prefill, then one token per row and
    step, rows that ran out fed nothing) equals each row's full forward pass of `exact` (float64) within
    float32 rounding."""
    g = torch.Generator().manual_seed(3)
    seqs = [torch.randint(0, 97, (n,), generator=g).tolist() for n in (6, 9, 4)]
    steps = [[s[:3] for s in seqs]] + [[s[t : t + 1] if t < len(s) else [] for s in seqs] for t in range(3, 9)]
    got = decode_in_steps(model, steps, subnet)
    with torch.no_grad():
        for b, s in enumerate(seqs):
            want = exact(torch.tensor([s]), subnet=subnet)[0]
            torch.testing.assert_close(got[b].double(), want, rtol=0, atol=2e-5)


@pytest.mark.parametrize("kw", [HYBRID, LLAMA, *FAMILIES.values()], ids=["hybrid", "llama", *FAMILIES])
def test_meta_init_is_complete_and_counts_match(kw):
    model = build(**kw)
    assert not any(p.is_meta for p in model.parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert model.num_parameters() == model.config.num_parameters()
    if model.config.tie_word_embeddings:
        assert model.lm_head.weight is model.embeddings.weight


def test_per_layer_widths_build_and_count():
    kw = dict(HYBRID, intermediate_size=[48, 16], num_attention_heads=[4, 2], mamba_num_heads=[6, 3])
    model = build(**kw)
    assert model.layers[1].mixer.up_proj.out_features == 48 and model.layers[4].mixer.up_proj.out_features == 16
    assert model.layers[5].mixer.num_heads == 2 and model.layers[3].mixer.num_heads == 3
    assert model.num_parameters() == model.config.num_parameters()
    assert model(torch.randint(0, 97, (2, 7))).shape == (2, 7, 97)


@pytest.mark.parametrize("kw", [HYBRID, LLAMA, *FAMILIES.values()], ids=["hybrid", "llama", *FAMILIES])
@pytest.mark.parametrize("splits", [[9, 1, 1, 1, 1], [1, 1, 5, 1, 3], [3, 4, 6]])
def test_incremental_decoding_equals_full_forward(kw, splits):
    """KV cache (attention) and conv + SSM state (Mamba) reproduce the full pass, token by token or in chunks."""
    model = build(**kw)
    x = torch.randint(0, 97, (2, sum(splits)), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(x)
        cache, outs, start = model.new_cache(), [], 0
        for n in splits:
            outs.append(model(x[:, start : start + n], cache=cache))
            start += n
    inc = torch.cat(outs, dim=1)
    diff = (inc - full).abs().max().item()
    assert diff < 1e-10, f"incremental vs full: max abs diff {diff:.3e}"
    assert cache.seen == x.shape[1]


@pytest.mark.parametrize("kw", [HYBRID, LLAMA], ids=["hybrid", "llama"])
def test_greedy_generate_equals_recomputation(kw):
    model = build(**kw)
    x = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(2))
    out = model.generate(x, max_new_tokens=12)
    ref = x
    with torch.no_grad():
        for _ in range(12):  # no cache: the whole prefix every step
            ref = torch.cat([ref, model(ref)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ref)


def test_sampling_is_seeded_and_top_k_one_is_greedy():
    model = build(**HYBRID)
    x = torch.randint(0, 97, (3, 4), generator=torch.Generator().manual_seed(3))
    s1 = model.generate(x, 10, temperature=1.0, generator=torch.Generator().manual_seed(7))
    s2 = model.generate(x, 10, temperature=1.0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(s1, s2)
    assert torch.equal(model.generate(x, 10, temperature=0.7, top_k=1), model.generate(x, 10))
    assert torch.equal(model.generate(x, 10, temperature=0.7, top_p=1e-9), model.generate(x, 10))


def test_eos_stops_rows():
    model = build(**HYBRID)
    x = torch.randint(0, 97, (1, 4), generator=torch.Generator().manual_seed(4))
    greedy = model.generate(x, 6)
    eos = int(greedy[0, 5])  # the second generated token
    out = model.generate(x, 6, eos_token_id=eos)
    assert out.shape[1] <= 6 and out[0, -1] == eos


def test_bf16_autocast_trains():
    model = build(dtype=torch.float32, **HYBRID).train()
    x = torch.randint(0, 97, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x.flatten())
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
