# SPDX-License-Identifier: Apache-2.0
"""The lm-eval model batches by length: a batched result equals the one-at-a-time result (batch_size=1),
log-likelihood and greedy flag, for mixed lengths, truncated contexts and multi-window rolling texts."""

import pytest
import torch
from lm_eval.api.instance import Instance

from nemotron_elastic.eval.lm_eval_model import DEFAULT_BATCH_SIZE, NemotronElasticLM
from nemotron_elastic.eval.token_scoring import BATCH_TOKENS

MAX_LENGTH = 24


@pytest.fixture(scope="module", params=[1.0, 0.5], ids=["full", "half"])
def pair(request, elastic_dir):
    """(one at a time, batched by 5) on one loaded model: the full parent and a sliced budget."""
    single = NemotronElasticLM(
        path=str(elastic_dir), budget=request.param, batch_size=1, max_length=MAX_LENGTH
    )
    batched = NemotronElasticLM.from_model(single.model, single.tokenizer, single.target, "m", 5, MAX_LENGTH)
    single.progress = batched.progress = False
    return single, batched


def request(kind, *args):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def same(got, want):
    assert len(got) == len(want)
    for (lp, greedy), (lp_want, greedy_want) in zip(got, want):
        assert lp == pytest.approx(lp_want, rel=1e-6, abs=1e-6)
        assert greedy == greedy_want


def test_batched_loglikelihood_equals_one_at_a_time(pair):
    single, batched = pair
    pairs = [
        ("The quick brown", " fox"),
        ("", "Hello world"),  # empty context: lm-eval puts the prefix token there
        ("word " * 40, " end"),  # longer than the context: left-truncated
        ("A", " b c d e f g"),
        ("To be or not to be, that is", " the question"),
        ("x", " y"),
        ("Once upon a time there was", " a king" * 12),  # continuation longer than the context window
    ]
    requests = [request("loglikelihood", *p) for p in pairs]
    same(batched.loglikelihood(requests), single.loglikelihood(requests))


def test_greedy_flags_agree_where_the_continuation_is_the_greedy_one(pair):
    """Token-level requests whose continuations are the model's own greedy tokens (flag True) or one token
    off (False), of mixed lengths in one batch; both flags must come out alike batched and unbatched."""
    single, _ = pair
    torch.manual_seed(0)
    requests = []
    for length, new in [(3, 1), (20, 4), (7, 2), (30, 3), (12, 6), (1, 1)]:
        context = torch.randint(3, single.tokenizer.vocab_size, (length,))
        prompt = context[None, -MAX_LENGTH:]
        out = single.model.generate(prompt, new, subnet=single.masks)[0, -new:].tolist()
        requests.append((None, context.tolist(), out))
        off = out[:-1] + [(out[-1] + 1) % single.tokenizer.vocab_size]
        requests.append((None, context.tolist(), off))
    want = single._loglikelihood_tokens(requests)
    assert sum(g for _, g in want) >= 4  # short contexts fit the window: their greedy tokens are greedy
    for batch_size in (2, 5, 64):
        single.batch_size = batch_size
        try:
            same(single._loglikelihood_tokens(requests), want)
        finally:
            single.batch_size = 1


def test_batched_rolling_equals_one_at_a_time(pair):
    single, batched = pair
    texts = [
        "A short text.",
        "A longer text that needs several windows of twenty-four tokens. " * 3,  # > MAX_LENGTH tokens
        "Tiny",
        "Another passage, of middling length, to mix the sizes in one batch.",
    ]
    requests = [request("loglikelihood_rolling", t) for t in texts]
    assert len(single.tok_encode(texts[1])) > 2 * MAX_LENGTH
    got, want = batched.loglikelihood_rolling(requests), single.loglikelihood_rolling(requests)
    assert got == pytest.approx(want, rel=1e-6)


def test_batch_size_argument(elastic_dir):
    lm = NemotronElasticLM.create_from_arg_string(
        f"path={elastic_dir},max_length={MAX_LENGTH},batch_size=7", {"batch_size": 1, "device": "cpu"}
    )
    assert lm.batch_size == 7  # the model arg wins over lm-eval's CLI default (1)
    lm = NemotronElasticLM.create_from_arg_string(
        f"path={elastic_dir}", {"batch_size": "auto", "device": None}
    )
    assert lm.batch_size == DEFAULT_BATCH_SIZE
    with pytest.raises(ValueError, match="must be positive"):
        NemotronElasticLM(path=str(elastic_dir), batch_size=0)


def test_batches_hold_at_most_batch_tokens_on_cpu(pair):
    """On a CPU a forward pass gets at most BATCH_TOKENS padded tokens (one row at least), and at most
    batch_size rows; results still equal one at a time."""
    single, _ = pair
    length = 300
    lm = NemotronElasticLM.from_model(single.model, single.tokenizer, single.target, "m", 16, length)
    lm.progress = False
    shapes = []
    handle = lm.model.register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape)))
    try:
        pairs = [("word " * n, " end") for n in (5, 80, 120, 3, 60, 200, 7, 90, 2, 150, 4, 6)]
        requests = [request("loglikelihood", *p) for p in pairs]
        got = lm.loglikelihood(requests)
    finally:
        handle.remove()
    cap = BATCH_TOKENS["cpu"]
    assert all(rows == 1 or rows * width <= cap for rows, width in shapes), shapes
    assert all(rows <= 16 for rows, _ in shapes) and sum(rows for rows, _ in shapes) == len(pairs)
    rows0, width0 = shapes[0]  # the longest rows come first: the token cap limits their batch
    assert width0 == length and rows0 == cap // length < 16
    assert max(rows for rows, _ in shapes) > rows0  # short rows batch more
    lm.batch_size = 1
    same(got, lm.loglikelihood(requests))
