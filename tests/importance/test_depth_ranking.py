# SPDX-License-Identifier: Apache-2.0
"""Depth ranking: the fast iterative search equals brute-force re-running, a layer made an identity is dropped
first by every method, and the one-shot / Block Importance scores match their definitions."""

import pytest
import torch
from importance_testlib import CONFIGS, HYBRID, make_parent, token_ids

from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.importance import block_importance, depth_ranking, iterative_depth_naive


@pytest.mark.parametrize("family", list(CONFIGS))
def test_fast_iterative_equals_brute_force(family):
    parent = make_parent(CONFIGS[family])
    ids = token_ids(parent.config, rows=3, cols=9)
    fast = depth_ranking(parent, ids, batch_size=2)
    drop, steps = iterative_depth_naive(parent, ids, batch_size=2)
    n = parent.config.num_layers
    assert fast.drop_order[: n - 1] == drop
    assert sorted(fast.drop_order) == list(range(n))
    assert len(fast.step_scores) == len(steps) == n - 1
    for t, (a, b) in enumerate(zip(fast.step_scores, steps)):
        assert a.keys() == b.keys()
        worst = max(abs(a[j] - b[j]) / b[j] for j in a)
        assert worst <= 1e-9, f"step {t}: relative score difference {worst:.3e}"


def test_scores_are_the_normalized_logit_mse():
    """Step-0 score of layer j = sum (M_full - M_-j)^2 / sum M_full^2, computed here from the definition."""
    parent = make_parent(HYBRID)
    ids = token_ids(HYBRID)
    ranking = depth_ranking(parent, ids, max_drops=1)
    with torch.no_grad():
        full = parent(ids)
        for j in range(HYBRID.num_layers):
            spec = SubnetSpec.from_dict({"layers": [i for i in range(HYBRID.num_layers) if i != j]}, HYBRID)
            expected = ((full - parent(ids, subnet=spec)) ** 2).sum() / (full**2).sum()
            assert abs(ranking.one_shot[j] - expected.item()) <= 1e-10 * expected.item()


def test_block_importance_is_one_minus_cosine():
    parent = make_parent(HYBRID)
    ids = token_ids(HYBRID)
    ins, outs = {}, {}

    def record(i):
        def hook(module, args, output):  # returns None: the block's output is left as it is
            ins[i], outs[i] = args[0], output[0]

        return hook

    handles = [block.register_forward_hook(record(i)) for i, block in enumerate(parent.layers)]
    with torch.no_grad():
        parent(ids)
    for h in handles:
        h.remove()
    scores = block_importance(parent, ids, batch_size=2)
    for j, score in enumerate(scores):
        expected = (1 - torch.nn.functional.cosine_similarity(ins[j], outs[j], dim=-1)).mean().item()
        assert abs(score - expected) <= 1e-12, (j, score, expected)


@pytest.mark.parametrize("family", list(CONFIGS))
def test_identity_layer_is_dropped_first(family):
    parent = make_parent(CONFIGS[family])
    layer = 2
    mixer = parent.layers[layer].mixer
    out = next(getattr(mixer, n) for n in ("down_proj", "o_proj", "out_proj") if hasattr(mixer, n))
    with torch.no_grad():  # the block adds nothing to the residual stream
        out.weight.zero_()
        if out.bias is not None:
            out.bias.zero_()
    ranking = depth_ranking(parent, token_ids(parent.config), max_drops=2, batch_size=2)
    assert ranking.drop_order[0] == layer
    assert ranking.step_scores[0][layer] == 0.0
    assert ranking.one_shot_order()[0] == layer
    assert ranking.block_importance_order()[0] == layer
    assert ranking.block_importance[layer] <= 1e-12


def test_partial_search_completes_the_drop_order():
    parent = make_parent(HYBRID)
    ranking = depth_ranking(parent, token_ids(HYBRID), max_drops=2)
    assert len(ranking.step_scores) == 2 and sorted(ranking.drop_order) == list(range(HYBRID.num_layers))
    last = ranking.step_scores[-1]
    rest = ranking.drop_order[2:]
    assert [last[j] for j in rest] == sorted(last[j] for j in rest)  # tail by ascending last-step score


@pytest.mark.parametrize("max_drops", [0, 6, -1])
def test_bad_max_drops(max_drops):
    with pytest.raises(ValueError, match="max_drops"):
        depth_ranking(make_parent(HYBRID), token_ids(HYBRID), max_drops=max_drops)
