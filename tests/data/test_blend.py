# SPDX-License-Identifier: Apache-2.0
"""The blend sampler (data/blend.py): shard streams, proportions, world-size invariance, exact resume, masks."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nemotron_elastic.data.blend import BlendDataset, TokenStream, eval_windows


def stream(name, n, parts=3, seed=0, masked=False):
    """A source of n tokens whose ids encode (source, position), split into `parts` shards."""
    rng = np.random.default_rng(seed)
    tokens = (np.arange(n) % 1000 + 1000 * (ord(name[0]) % 7)).astype(np.uint16)
    cuts = np.sort(rng.choice(np.arange(1, n), parts - 1, replace=False)) if parts > 1 else []
    shards = np.split(tokens, cuts)
    masks = [(s % 3 == 0).astype(np.uint8) for s in shards] if masked else None
    return TokenStream(name, shards, masks, fingerprint=name), tokens


@settings(max_examples=50, deadline=None)
@given(n=st.integers(2, 400), parts=st.integers(1, 6), data=st.data())
def test_a_stream_of_shards_reads_like_one_array(n, parts, data):
    s, tokens = stream("a", n, min(parts, n - 1) if n > 1 else 1, seed=n)
    start = data.draw(st.integers(0, n - 1))
    stop = data.draw(st.integers(start + 1, n))
    assert np.array_equal(s.tokens(start, stop), tokens[start:stop])


def test_blend_proportions_match_the_weights():
    streams = [stream(c, 5000 + 997 * i)[0] for i, c in enumerate("abc")]
    weights = [0.5, 0.3, 0.2]
    ds = BlendDataset(streams, weights, seq_len=16, batch_size=50, seed=3)
    origin = []
    for _ in range(100):  # 5,000 windows
        origin += [int(row[0]) // 1000 for row in next(ds).tokens]
    names = {ord(c) % 7: i for i, c in enumerate("abc")}
    shares = np.bincount([names[o] for o in origin], minlength=3) / len(origin)
    assert np.abs(shares - weights).max() < 0.01, shares
    assert np.abs(ds.shares - weights).max() <= 1 / 5000 + 1e-12  # the deficit rule: within one window


def test_the_global_stream_is_the_same_at_any_world_size_and_after_a_resume():
    streams = [stream("a", 3000)[0], stream("b", 2000, parts=5)[0]]
    one = BlendDataset(streams, [0.7, 0.3], 8, batch_size=4, seed=1)
    reference = [next(one).tokens for _ in range(20)]
    two = [BlendDataset(streams, [0.7, 0.3], 8, batch_size=2, seed=1, rank=r, world_size=2) for r in range(2)]
    for step in range(20):
        assert torch.equal(torch.cat([next(d).tokens for d in two]), reference[step])
    resumed = BlendDataset(streams, [0.7, 0.3], 8, batch_size=1, seed=1, rank=2, world_size=4)
    half = BlendDataset(streams, [0.7, 0.3], 8, batch_size=4, seed=1)
    for _ in range(10):
        next(half)
    resumed.load_state_dict(half.state_dict())  # saved by one process, continued on four
    assert torch.equal(next(resumed).tokens[0], reference[10][2])


def test_a_resume_state_for_another_stream_is_refused():
    a = BlendDataset([stream("a", 500)[0]], [1.0], 8, 2)
    b = BlendDataset([stream("a", 500)[0], stream("b", 500)[0]], [1.0, 1.0], 8, 2)
    with pytest.raises(ValueError, match="another stream: weights"):
        b.load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="positive"):
        BlendDataset([stream("a", 500)[0]], [0.0], 8, 2)
    with pytest.raises(ValueError, match="fewer than one window"):
        BlendDataset([stream("a", 8)[0]], [1.0], 8, 2)


def test_masks_follow_their_targets_and_text_sources_count_everything():
    chat, _ = stream("c", 800, masked=True)
    text, _ = stream("t", 800)
    ds = BlendDataset([chat, text], [0.5, 0.5], 12, batch_size=8, seed=0, masked=True)
    batch = next(ds)
    assert batch.loss_mask.shape == (8, 12) and batch.loss_mask.dtype == torch.bool
    for row, mask in zip(batch.tokens, batch.loss_mask):
        if int(row[0]) // 1000 == ord("c") % 7:  # a chat window: the mask is its targets' own
            assert torch.equal(mask, row[1:] % 3 == 0)
        else:
            assert bool(mask.all())
    assert BlendDataset([chat], [1.0], 12, 2).__next__().loss_mask is None  # not asked for


def test_eval_windows_count_every_token_but_the_first_once():
    s, tokens = stream("a", 103, parts=4)
    batches = list(eval_windows(s, 10, batch_size=4))
    targets = np.concatenate([b.tokens[:, 1:].reshape(-1).numpy() for b in batches])
    assert np.array_equal(targets, tokens[1:].astype(np.int64))
    assert batches[-1].tokens.shape == (1, 3)  # the tail window alone: tokens 100..102
    assert sum(b.tokens.shape[0] for b in eval_windows(s, 10, 4, max_windows=3)) == 3
