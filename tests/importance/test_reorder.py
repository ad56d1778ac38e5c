# SPDX-License-Identifier: Apache-2.0
"""Reordering is function-preserving (float64, 1e-10) on hybrid and Llama-family parents, for random
group-preserving permutations and for the real rankings; after it every axis is sorted (prefix = top-k)."""

import copy

import pytest
import torch
from importance_testlib import CONFIGS, HYBRID, assert_close, make_parent, token_ids

from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.importance import AxisRanking, Ranking, random_ranking, reorder_model, width_ranking


@pytest.mark.parametrize("family", list(CONFIGS))
@pytest.mark.parametrize("seed", [1, 2])
def test_random_permutation_keeps_logits(family, seed):
    parent = make_parent(CONFIGS[family])
    ids = token_ids(parent.config)
    ranking = random_ranking(parent.config, torch.Generator().manual_seed(seed))
    moved = reorder_model(copy.deepcopy(parent), ranking)
    with torch.no_grad():
        assert_close(moved(ids), parent(ids), what=f"{family} random permutation")
    # the permutation did move weights (otherwise the test proves nothing)
    assert not torch.equal(moved.embeddings.weight, parent.embeddings.weight)
    if parent.config.tie_word_embeddings:
        assert moved.lm_head.weight is moved.embeddings.weight


@pytest.mark.parametrize("family", list(CONFIGS))
def test_real_ranking_keeps_logits_and_sorts_every_axis(family):
    parent = make_parent(CONFIGS[family])
    ids = token_ids(parent.config)
    ranking = width_ranking(parent, ids, batch_size=2)
    moved = reorder_model(copy.deepcopy(parent), ranking)
    with torch.no_grad():
        assert_close(moved(ids), parent(ids), what=f"{family} ranked permutation")
    # scoring the sorted parent again gives the identity order on every axis
    again = width_ranking(moved, ids, batch_size=2)
    assert again.hidden.order == list(range(parent.config.hidden_size))
    for axis in ("mlp", "attention_heads", "mamba_heads", "mamba_head_dim"):
        for layer, rank in getattr(again, axis).items():
            assert rank.order == list(range(len(rank.order))), f"{axis}[{layer}] not sorted after reorder"


def test_prefix_of_the_sorted_parent_is_the_top_k_of_the_original():
    """An MLP prefix of the sorted parent computes what the original does with only its top-k neurons."""
    parent = make_parent(HYBRID)
    ids = token_ids(HYBRID)
    ranking = width_ranking(parent, ids, batch_size=2)
    moved = reorder_model(copy.deepcopy(parent), ranking)
    top_only = copy.deepcopy(parent)
    with torch.no_grad():
        for layer, rank in ranking.mlp.items():
            top_only.layers[layer].mixer.down_proj.weight[:, rank.order[11:]] = (
                0  # silence all but the top 11
            )
        spec = SubnetSpec.from_dict({"mlp": 11}, HYBRID)
        assert_close(moved(ids, subnet=spec), top_only(ids), what="MLP prefix vs top-11 neurons")


def test_reorder_rejects_cross_group_and_bad_orders():
    parent = make_parent(HYBRID)
    layer = HYBRID.pattern.index("M")
    crossing = Ranking(mamba_heads={layer: AxisRanking([2, 1, 0, 3, 4, 5], [0.0] * 6)})  # head 2 is group 1
    with pytest.raises(ValueError, match="out of its group"):
        reorder_model(parent, crossing)
    attn = HYBRID.pattern.index("*")
    crossing = Ranking(attention_heads={attn: AxisRanking([3, 1, 2, 0, 4, 5], [0.0] * 6)})
    with pytest.raises(ValueError, match="out of its group"):
        reorder_model(parent, crossing)
    with pytest.raises(ValueError, match="permutation"):
        reorder_model(parent, Ranking(hidden=AxisRanking([0] * 24, [0.0] * 24)))
    with pytest.raises(ValueError, match="not a '-' layer"):
        reorder_model(parent, Ranking(mlp={0: AxisRanking(list(range(20)), [0.0] * 20)}))
