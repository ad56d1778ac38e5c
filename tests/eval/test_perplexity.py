# SPDX-License-Identifier: Apache-2.0
"""eval.perplexity: window plans, equality with a direct computation and with transformers' loss."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig, LlamaForCausalLM

from nemotron_elastic.checkpoint import load_model
from nemotron_elastic.config.model import ModelConfig
from nemotron_elastic.eval.perplexity import perplexity, plan_windows, token_nll
from nemotron_elastic.model import HybridLM

TINY = ModelConfig(
    pattern="M*-M-", vocab_size=61, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
    intermediate_size=48, mamba_num_heads=4, mamba_head_dim=8, mamba_n_groups=2, ssm_state_size=8,
    chunk_size=8,
)  # fmt: skip


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_model(dtype=torch.float64) -> HybridLM:
    with torch.device("meta"):
        model = HybridLM(TINY)
    model.to_empty(device="cpu")
    model.init_weights(torch.Generator().manual_seed(0))
    return model.to(dtype).eval()


def stream(n: int, vocab: int = 61) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(n))


def direct_nll_sum(model, ids: torch.Tensor, seq_len: int, stride: int) -> tuple[float, int]:
    """Reference: one forward per window, scoring each token of [begin + 1 | last scored + 1, end) once."""
    total, count, scored_until = 0.0, 0, 1
    for begin in range(0, ids.numel(), stride):
        end = min(begin + seq_len, ids.numel())
        with torch.no_grad():
            logp = torch.log_softmax(model(ids[None, begin:end])[0].double(), dim=-1)  # (T, V)
        for pos in range(max(scored_until, begin + 1), end):
            total -= logp[pos - begin - 1, ids[pos]].item()
            count += 1
        scored_until = end
        if end == ids.numel():
            break
    return total, count


def rel_diff(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


@settings(deadline=None, max_examples=60)  # no deadline: the CPU may be shared
@given(n=st.integers(2, 300), seq_len=st.integers(2, 64), data=st.data())
def test_plan_scores_each_token_at_most_once_with_bounded_context(n, seq_len, data):
    stride = data.draw(st.one_of(st.none(), st.integers(1, seq_len)))
    windows = plan_windows(n, seq_len, stride)
    scored = [t for w in windows for t in range(w.first_target, w.end)]
    assert len(scored) == len(set(scored)), "a token is scored twice"
    assert all(w.begin < w.first_target < w.end <= n and w.end - w.begin <= seq_len for w in windows)
    if stride is None or stride == seq_len:
        # non-overlapping: everything but the first token of each window
        assert len(scored) == n - math.ceil(n / seq_len)
    else:
        assert sorted(scored) == list(range(1, n)), "a sliding plan scores every token after the first"


@pytest.mark.parametrize(
    "n, seq_len, stride, batch_size",
    [
        (100, 16, None, 4),
        (100, 16, None, 1),
        (97, 16, 5, 3),
        (64, 16, 1, 8),
        (33, 64, None, 2),
        (129, 32, 16, 4),
    ],
)
def test_equals_direct_computation(n, seq_len, stride, batch_size):
    model = tiny_model()
    ids = stream(n)
    total, count = direct_nll_sum(model, ids, seq_len, stride or seq_len)
    expected = math.exp(total / count)
    got = perplexity(model, ids, seq_len=seq_len, batch_size=batch_size, stride=stride)
    assert rel_diff(got, expected) < 1e-10, f"perplexity {got} vs direct {expected}"
    nll = token_nll(model, ids, seq_len=seq_len, batch_size=batch_size, stride=stride)
    assert nll.shape == (n,) and int((~nll.isnan()).sum()) == count
    assert math.isnan(nll[0].item())


def test_one_window_covering_the_stream_equals_full_forward_and_sliding_window():
    """With seq_len >= N every plan is one window: strided and non-overlapping agree with one forward."""
    model = tiny_model()
    ids = stream(40)
    with torch.no_grad():
        logp = torch.log_softmax(model(ids[None])[0], dim=-1)
    expected = math.exp(-logp[:-1].gather(1, ids[1:, None]).mean().item())
    for stride in (None, 7):
        assert rel_diff(perplexity(model, ids, seq_len=64, stride=stride), expected) < 1e-10


def test_bf16_model_is_scored_in_float32_and_close():
    model32, ids = tiny_model(torch.float32), stream(80)
    ppl32 = perplexity(model32, ids, seq_len=32)
    ppl16 = perplexity(model32.to(torch.bfloat16), ids, seq_len=32)
    assert rel_diff(ppl16, ppl32) < 0.05, f"bf16 {ppl16} vs fp32 {ppl32}"


@pytest.mark.parametrize("stride", [None, 24])
def test_equals_transformers_loss_based_perplexity(stride, tmp_path):
    """The transformers perplexity guide's recipe (labels, -100 masks, mean loss) on a tiny random Llama,
    against our perplexity of the same weights loaded natively through load_model."""
    cfg = LlamaConfig(
        vocab_size=80, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
        intermediate_size=64, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    )  # fmt: skip
    hf = LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path)
    native = load_model(tmp_path)
    ids, seq_len = stream(150, 80), 64
    stride = stride or seq_len

    nll_sum, count, prev_end = 0.0, 0, 0
    for begin in range(0, ids.numel(), stride):
        end = min(begin + seq_len, ids.numel())
        trg_len = end - prev_end
        input_ids = ids[None, begin:end]
        labels = input_ids.clone()
        labels[:, :-trg_len] = -100
        with torch.no_grad():
            loss = hf(input_ids, labels=labels).loss
        num_valid = int((labels[:, 1:] != -100).sum())  # transformers shifts the labels inside
        nll_sum += loss.item() * num_valid
        count += num_valid
        prev_end = end
        if end == ids.numel():
            break
    expected = math.exp(nll_sum / count)

    got = perplexity(native, ids, seq_len=seq_len, batch_size=2, stride=stride if stride < seq_len else None)
    assert rel_diff(got, expected) < 1e-5, f"native {got} vs transformers {expected}"
    got_hf = perplexity(hf, ids, seq_len=seq_len, batch_size=2, stride=stride if stride < seq_len else None)
    assert rel_diff(got_hf, expected) < 1e-5, f"perplexity() of the HF model {got_hf} vs its loss {expected}"


def test_restores_training_mode():
    model = tiny_model().train()
    perplexity(model, stream(20), seq_len=8)
    assert model.training


@pytest.mark.parametrize(
    "ids, kwargs, match",
    [
        (torch.tensor([3]), {}, "at least 2 tokens"),
        (torch.tensor([], dtype=torch.long), {}, "at least 2 tokens"),
        (torch.zeros(2, 10, dtype=torch.long), {}, "1-D"),
        (torch.arange(10), {"seq_len": 1}, "seq_len"),
        (torch.arange(10), {"seq_len": 8, "stride": 9}, "stride"),
        (torch.arange(10), {"seq_len": 8, "stride": 0}, "stride"),
        (torch.arange(10), {"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments_raise_value_error(ids, kwargs, match):
    with pytest.raises(ValueError, match=match):
        perplexity(tiny_model(), ids, **kwargs)
