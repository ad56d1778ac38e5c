# SPDX-License-Identifier: Apache-2.0
"""The continuous batcher (model/batcher.py): requests of mixed budgets and lengths arriving, finishing and
being cancelled at random steps each get exactly the tokens they get alone.

"Alone" is the independent reference: greedy decoding by a full forward pass over the whole sequence at
every token (no cache at all), in float64, where no greedy choice of the random micro model is near a tie
(checked: the top-2 margin of every reference step is stated and asserted)."""

import random

import pytest
import torch
from test_hybrid import HYBRID, LLAMA, MISTRAL, build

from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.model.batch_cache import KV_KINDS
from nemotron_elastic.model.batcher import ContinuousBatcher, SequenceRequest, generate
from nemotron_elastic.model.masks import ElasticMasks

MARGIN = 1e-6  # smallest top-2 logit gap allowed in a reference step (fp64 sums differ by ~1e-13)


def _specs(model):
    parent = model.config
    if parent.pattern == HYBRID["pattern"]:
        return [None,
                SubnetSpec.from_dict({"hidden": 24, "mlp": 32, "attention_heads": 2, "mamba_heads": 3,
                                      "mamba_head_dim": 3, "layers": [0, 1, 2, 4, 5]}, parent),
                SubnetSpec.from_dict({"hidden": 16, "mlp": [16, 24], "mamba_heads": [3, 6]}, parent)]
    return [None, SubnetSpec.from_dict({"hidden": 24, "mlp": 24, "attention_heads": 4}, parent)]


def _alone(model, prompt, n, subnet, stops) -> list[int]:
    """Greedy continuation by full recomputation; asserts every choice has a clear top-2 margin."""
    seq, out = list(prompt), []
    for _ in range(n):
        with torch.no_grad():
            logits = model(torch.tensor([seq]), subnet=subnet)[0, -1]
        top2 = logits.topk(2).values
        assert float(top2[0] - top2[1]) > MARGIN, "a near tie in the reference: pick another seed"
        token = int(logits.argmax())
        out.append(token)
        seq.append(token)
        if token in stops:
            break
    return out


@pytest.mark.parametrize(("kind", "mixed"), [(k, "group") for k in KV_KINDS] + [("padded", "widest")])
@pytest.mark.parametrize("name", ["hybrid", "llama", "mistral"])
def test_churn_equals_each_request_alone(name, kind, mixed):
    model = build(**{"hybrid": HYBRID, "llama": LLAMA, "mistral": MISTRAL}[name])
    specs, rng = _specs(model), random.Random(0)
    requests = []
    for i in range(52):
        prompt = [rng.randrange(97) for _ in range(rng.randint(1, 14))]
        n, spec, stops = rng.randint(1, 9), specs[i % len(specs)], frozenset()
        if i % 3 == 0:  # a stop token the request does produce (at a random step)
            stops = frozenset({rng.choice(_alone(model, prompt, n, spec, stops))})
        requests.append(SequenceRequest(prompt, n, spec, stop_token_ids=stops))
    arrivals = sorted(rng.sample(range(60), len(requests)))  # the step at which each request arrives
    cancel_at = {i: arrivals[i] + rng.randint(0, 4) for i in range(0, len(requests), 7)}
    batcher = ContinuousBatcher(model, kv_cache=kind, prefill_chunk=5, mixed=mixed)
    rid_of, got, finish, step = {}, {}, {}, 0
    while len(finish) < len(requests):
        for i, at in enumerate(arrivals):
            if at == step:
                rid_of[batcher.submit(requests[i])] = i
        for i, at in cancel_at.items():
            if at == step and i in rid_of.values():
                batcher.cancel(next(r for r, j in rid_of.items() if j == i))
        for event in batcher.step():
            i = rid_of[event.rid]
            if event.token is not None:
                got.setdefault(i, []).append(event.token)
            if event.finish is not None:
                finish[i] = event.finish
        step += 1
        assert step < 500
    assert batcher.active == 0
    kinds = set()
    for i, req in enumerate(requests):
        want = _alone(model, req.prompt, req.max_new_tokens, req.subnet, req.stop_token_ids)
        tokens = got.get(i, [])
        kinds.add(finish[i])
        if finish[i] == "cancelled":
            assert tokens == want[: len(tokens)]
        else:
            assert tokens == want, (i, finish[i])
            assert finish[i] == ("stop" if want[-1] in req.stop_token_ids else "length")
    assert kinds == {"stop", "length", "cancelled"}


def test_sampling_is_per_request_and_seeded():
    model = build(**HYBRID)
    req = {"prompt": [3, 1, 4], "max_new_tokens": 8, "temperature": 0.9, "top_k": 20, "top_p": 0.95}
    alone = ContinuousBatcher(model)
    rid = alone.submit(SequenceRequest(**req, seed=7))
    want = [e.token for e in alone.run()[rid]]
    together = ContinuousBatcher(model)
    ids = [together.submit(SequenceRequest(**req, seed=s)) for s in (1, 7, 2)]
    got = together.run()
    assert [e.token for e in got[ids[1]]] == want
    assert [e.token for e in got[ids[0]]] != want  # another seed, another sample (8 tokens of 97)


def test_generate_pads_finished_rows_with_eos_and_matches_alone():
    model = build(**HYBRID)
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    out = generate(model, ids, 6)
    for b in range(2):
        assert out[b, 4:].tolist() == _alone(model, ids[b].tolist(), 6, None, frozenset())
    eos = int(out[0, 5])
    stopped = generate(model, ids, 6, eos_token_id=eos)
    assert stopped[0, 5:].tolist() == [eos] * (stopped.shape[1] - 5)
    assert generate(model, ids, 0) is ids


def test_bad_requests_are_refused():
    model = build(**HYBRID)
    with pytest.raises(ValueError, match="prefill_chunk"):
        ContinuousBatcher(model, prefill_chunk=0)
    with pytest.raises(ValueError, match="kv cache kind"):
        ContinuousBatcher(model, kv_cache="ring")
    with pytest.raises(ValueError, match="mixed"):
        ContinuousBatcher(model, mixed="widestest")
    with pytest.raises(ValueError, match="SubnetSpec"):
        ContinuousBatcher(model, mixed="widest").submit(SequenceRequest([1], 2, ElasticMasks.from_spec(
            SubnetSpec.from_dict({"hidden": 16}, model.config))))
    batcher = ContinuousBatcher(model)
    with pytest.raises(ValueError, match="prompt"):
        batcher.submit(SequenceRequest([], 3))
    with pytest.raises(ValueError, match="max_new_tokens"):
        batcher.submit(SequenceRequest([1], -1))
    rid = batcher.submit(SequenceRequest([1], 0))
    assert [(e.rid, e.token, e.finish) for e in batcher.step()] == [(rid, None, "length")]


def test_a_step_feeds_at_most_prefill_chunk_prompt_tokens():
    """New prompts share a step's budget of prompt tokens in arrival order (a long one takes several steps,
    short ones share one), so running rows never wait behind more than prefill_chunk prompt tokens."""
    model = build(**HYBRID)
    batcher = ContinuousBatcher(model, prefill_chunk=6)
    long_prompt, short = list(range(1, 18)), [[5, 6], [7, 8, 9], [10]]
    ids = [batcher.submit(SequenceRequest(p, 3)) for p in [long_prompt, *short]]
    fed, events = [], {}
    while batcher.has_work():
        for e in batcher.step():
            events.setdefault(e.rid, []).append(e.token)
        fed.append(batcher.prefill_tokens)
        batcher.prefill_tokens = 0
    assert max(fed) <= 6 and sum(fed) == 17 + 2 + 3 + 1
    assert fed[:3] == [6, 6, 6]  # the long prompt first: 6 + 6 + 5, then the first short one joins its step
    for rid, prompt in zip(ids, [long_prompt, *short]):
        assert [t for t in events[rid] if t is not None] == _alone(model, prompt, 3, None, frozenset())
