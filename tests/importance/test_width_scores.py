# SPDX-License-Identifier: Apache-2.0
"""Width importance: planted unimportant units rank last on their axis, groups are respected, hooks never
outlive the scoring, and the aggregation matches its closed form."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from importance_testlib import CONFIGS, HYBRID, layers_of, make_parent, token_ids

from nemotron_elastic.importance import Aggregation, order_by_scores, width_ranking
from nemotron_elastic.importance.hooks import RunningStat, collect, output_of
from nemotron_elastic.importance.width import width_stats


def _zero_rows(linear: torch.nn.Linear, rows) -> None:
    linear.weight[rows] = 0
    if linear.bias is not None:
        linear.bias[rows] = 0


@pytest.mark.parametrize("family", list(CONFIGS))
@pytest.mark.parametrize("mlp_point", ["pre", "post"])
def test_planted_mlp_neuron_ranks_last(family, mlp_point):
    parent = make_parent(CONFIGS[family])
    neuron = 7
    with torch.no_grad():
        for layer in layers_of(parent.config, "-"):
            mixer = parent.layers[layer].mixer
            for proj in (getattr(mixer, "gate_proj", None), mixer.up_proj):
                if proj is not None:
                    _zero_rows(proj, [neuron])
            mixer.down_proj.weight[:, neuron] = 0
    ranking = width_ranking(parent, token_ids(parent.config), batch_size=2, mlp_point=mlp_point)
    for layer, rank in ranking.mlp.items():
        assert rank.order[-1] == neuron, f"layer {layer}: {rank.order}"
        assert rank.scores[neuron] == 0.0


@pytest.mark.parametrize("family", list(CONFIGS))
def test_planted_attention_head_ranks_last_in_its_group(family):
    parent = make_parent(CONFIGS[family])
    cfg = parent.config
    per_group = cfg.num_attention_heads // cfg.num_key_value_heads
    head, hd = per_group + 1, cfg.head_dim  # the middle head of KV group 1
    rows = list(range(head * hd, (head + 1) * hd))
    with torch.no_grad():
        for layer in layers_of(cfg, "*"):
            mixer = parent.layers[layer].mixer
            _zero_rows(mixer.q_proj, rows)
            mixer.o_proj.weight[:, rows] = 0  # the head writes nothing to the residual stream
    ranking = width_ranking(parent, token_ids(cfg), batch_size=2, attention_point="head_output")
    for layer, rank in ranking.attention_heads.items():
        group = rank.order[per_group : 2 * per_group]
        assert group[-1] == head, f"layer {layer}: {rank.order}"
        assert rank.scores[head] == 0.0


@pytest.mark.parametrize("mamba_point", ["out_proj_input", "x"])
def test_planted_mamba_head_and_channel_rank_last_in_their_group(mamba_point):
    parent = make_parent(HYBRID)
    cfg = parent.config
    p, per_group = cfg.mamba_head_dim, cfg.mamba_num_heads // cfg.mamba_n_groups
    inner = cfg.mamba_num_heads * p
    head, channel = 2 * per_group, 1  # first head of group 2; head channel 1 of every other head
    with torch.no_grad():
        for layer in layers_of(cfg, "M"):
            mixer = parent.layers[layer].mixer
            head_rows = list(range(head * p, (head + 1) * p))
            # the head's own weights: z and x rows, its dt row, its out_proj columns
            dt_row = mixer.in_proj.out_features - cfg.mamba_num_heads + head
            _zero_rows(mixer.in_proj, head_rows + [inner + r for r in head_rows] + [dt_row])
            mixer.out_proj.weight[:, head_rows] = 0
            _zero_rows(
                mixer.in_proj, [inner + h * p + channel for h in range(cfg.mamba_num_heads)]
            )  # x channel
    ranking = width_ranking(parent, token_ids(cfg), batch_size=2, mamba_point=mamba_point)
    for layer in layers_of(cfg, "M"):
        heads, channels = ranking.mamba_heads[layer], ranking.mamba_head_dim[layer]
        assert heads.order[2 * per_group : 3 * per_group][-1] == head, heads.order
        assert heads.scores[head] == 0.0
        assert channels.order[-1] == channel, channels
        if mamba_point == "x":  # at out_proj's input the conv bias still feeds the zeroed x channel
            assert channels.scores[channel] == 0.0, channels


@pytest.mark.parametrize("family", list(CONFIGS))
def test_planted_hidden_channel_ranks_last(family):
    parent = make_parent(CONFIGS[family])
    c = 5
    with torch.no_grad():  # channel c zeroed everywhere it is read or written
        parent.embeddings.weight[:, c] = 0
        parent.norm_f.weight[c] = 0
        for block in parent.layers:
            block.norm.weight[c] = 0
            for module in block.mixer.modules():
                if isinstance(module, torch.nn.Linear):
                    if module.in_features == parent.config.hidden_size:
                        module.weight[:, c] = 0
                    if module.out_features == parent.config.hidden_size:
                        _zero_rows(module, [c])
    ranking = width_ranking(parent, token_ids(parent.config), batch_size=2)
    assert ranking.hidden.order[-1] == c and ranking.hidden.scores[c] == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_mamba_heads_never_cross_groups(seed):
    parent = make_parent(HYBRID, seed=seed)
    ranking = width_ranking(parent, token_ids(HYBRID, seed=seed), batch_size=3)
    per_group = HYBRID.mamba_num_heads // HYBRID.mamba_n_groups
    for layer, rank in ranking.mamba_heads.items():
        for g in range(HYBRID.mamba_n_groups):
            kept = rank.order[g * per_group : (g + 1) * per_group]
            assert sorted(kept) == list(range(g * per_group, (g + 1) * per_group)), (layer, rank.order)
            scores = [rank.scores[h] for h in kept]
            assert scores == sorted(scores, reverse=True)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 5), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_order_by_scores_is_a_group_preserving_sort(groups, per_group, seed):
    scores = torch.rand(groups * per_group, generator=torch.Generator().manual_seed(seed)).round(decimals=1)
    order = order_by_scores(scores, groups)
    for g in range(groups):
        block = order[g * per_group : (g + 1) * per_group]
        assert sorted(block) == list(range(g * per_group, (g + 1) * per_group))
        assert [scores[i] for i in block] == sorted((scores[i] for i in block), reverse=True)


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_are_removed_after_scoring_and_after_errors():
    parent = make_parent(HYBRID)
    width_stats(parent, token_ids(HYBRID), batch_size=2)
    assert _hook_count(parent) == 0
    with pytest.raises(RuntimeError):  # float token ids: the embedding lookup fails after the hooks are set
        width_stats(parent, token_ids(HYBRID).double(), batch_size=2)
    assert _hook_count(parent) == 0

    def boom(args, out):
        raise KeyError("inside a hook")

    with pytest.raises(KeyError), collect({"n": (parent.norm_f, boom)}):
        parent(token_ids(HYBRID))
    assert _hook_count(parent) == 0


def test_aggregation_matches_closed_form_and_accumulates_over_batches():
    a = torch.randn(6, 9, 5, dtype=torch.float64)
    stat = RunningStat(Aggregation())
    stat.update(a[:4])
    stat.update(a[4:])
    expected = a.abs().mean(1).square().sum(0).sqrt()  # mean over the sequence, L2 over the batch
    assert torch.allclose(stat.value(), expected, rtol=1e-12, atol=0)
    for seq, batch, ref in [
        ("sum", "mean", a.abs().sum(1).mean(0)),
        ("max", "max", a.abs().amax(1).amax(0)),
        ("mean", "sum", a.abs().mean(1).sum(0)),
    ]:
        stat = RunningStat(Aggregation(seq, batch))
        stat.update(a[:1])
        stat.update(a[1:])
        assert torch.allclose(stat.value(), ref, rtol=1e-12, atol=0), (seq, batch)
    with pytest.raises(ValueError, match="aggregation.batch"):
        Aggregation("mean", "l3")


def test_hooks_record_the_norm_output():
    parent = make_parent(HYBRID)
    ids = token_ids(HYBRID)
    with torch.no_grad(), collect({"final": (parent.norm_f, output_of)}) as stats:
        parent(ids)
    seen = stats["final"].value()
    with torch.no_grad():
        captured = {}
        handle = parent.norm_f.register_forward_hook(lambda m, a, o: captured.setdefault("o", o))
        parent(ids)
        handle.remove()
    assert torch.allclose(seen, captured["o"].abs().mean(1).square().sum(0).sqrt())


@pytest.mark.parametrize("point", ["head_output", "o_proj_input"])
def test_attention_head_scores_match_their_definition(point):
    parent = make_parent(HYBRID)
    ids = token_ids(HYBRID)
    layer = HYBRID.pattern.index("*")
    mixer = parent.layers[layer].mixer
    captured = {}
    handle = mixer.o_proj.register_forward_hook(lambda m, a, o: captured.__setitem__("y", a[0]))
    with torch.no_grad():
        parent(ids)
    handle.remove()
    y = captured["y"].unflatten(-1, (mixer.num_heads, mixer.head_dim))  # (B, L, Hq, hd)
    if point == "head_output":  # each head's own contribution W_o[:, h] y_h, its norm per token
        w = mixer.o_proj.weight.unflatten(1, (mixer.num_heads, mixer.head_dim))  # (D, Hq, hd)
        per_token = torch.einsum("dhi,blhi->blhd", w, y).norm(dim=-1)  # (B, L, Hq)
        expected = per_token.mean(1).square().sum(0).sqrt()
    else:  # per channel, then L2 over the head's channels
        expected = y.abs().mean(1).square().sum(0).sqrt().norm(dim=-1)
    got = torch.tensor(
        width_ranking(parent, ids, attention_point=point).attention_heads[layer].scores, dtype=torch.float64
    )
    assert torch.allclose(got, expected.double(), rtol=1e-10, atol=0), (got, expected)
