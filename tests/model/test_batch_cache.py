# SPDX-License-Identifier: Apache-2.0
"""Batched decoding (model/batch_cache.py): rows at their own lengths equal each row run alone.

Every check is in float64 against the full forward pass of each row on its own: ragged prompts (right
padding), chunked prefill, one-token steps, rows joining (concat) and leaving (select), sub-models, both KV
kinds, and every attention family (RoPE types, sliding window)."""

import pytest
import torch
from test_hybrid import FAMILIES, HYBRID, LLAMA, build

from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.model.batch_cache import KV_KINDS, PAGE, BatchCache

DYNAMIC = dict(LLAMA, max_position_embeddings=8, rope_parameters={"rope_type": "dynamic", "factor": 2.0,
                                                                   "rope_theta": 1000.0})
CONFIGS = {"hybrid": HYBRID, "llama": LLAMA, "llama-dynamic": DYNAMIC, **FAMILIES}


def _full(model, ids: list[int], subnet=None) -> torch.Tensor:
    """(len(ids), V) logits of one row's full forward pass."""
    return model(torch.tensor([ids]), subnet=subnet)[0]


def _feed(model, cache, rows: list[list[int]], subnet=None) -> torch.Tensor:
    """Feed each row its tokens (ragged, right-padded) in one forward -> logits (B, T, V)."""
    width = max(len(r) for r in rows)
    x = torch.zeros(len(rows), width, dtype=torch.long)
    for b, r in enumerate(rows):
        x[b, : len(r)] = torch.tensor(r, dtype=torch.long)
    counts = torch.tensor([len(r) for r in rows])
    return model(x, cache=cache, counts=counts, subnet=subnet)


@pytest.mark.parametrize("kind", KV_KINDS)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_ragged_chunks_and_steps_equal_each_row_alone(name, kind):
    model = build(**CONFIGS[name])
    g = torch.Generator().manual_seed(1)
    lengths = [3, 11, 1, 7]
    seqs = [torch.randint(0, 97, (n + 6,), generator=g).tolist() for n in lengths]
    cache = model.new_batch_cache(len(seqs), kind)
    # prefill in two ragged chunks (the second chunk leaves rows 2 short: count 0 for a finished row)
    first = [s[: min(n, 4)] for s, n in zip(seqs, lengths)]
    second = [s[len(f): n] for s, f, n in zip(seqs, first, lengths)]
    got = [[] for _ in seqs]
    for chunk in (first, second):
        if max(len(c) for c in chunk) == 0:
            continue
        logits = _feed(model, cache, chunk)
        for b, c in enumerate(chunk):
            got[b].append(logits[b, : len(c)])
    for t in range(6):  # one token per row per step, each row at its own position
        logits = _feed(model, cache, [[s[n + t]] for s, n in zip(seqs, lengths)])
        for b in range(len(seqs)):
            got[b].append(logits[b, :1])
    assert cache.lengths.tolist() == [n + 6 for n in lengths]
    for b, s in enumerate(seqs):
        # alone: the same pieces through the single-sequence cache (dynamic RoPE rotates a cached prefix with
        # the frequencies of its own time, so only there does that differ from one full forward pass)
        alone, pieces = model.new_cache(), [first[b], second[b]] + [[t] for t in s[lengths[b]:]]
        want = torch.cat([model(torch.tensor([p]), cache=alone)[0] for p in pieces if p])
        torch.testing.assert_close(torch.cat(got[b]), want, rtol=0, atol=1e-10)
        if name != "llama-dynamic":
            torch.testing.assert_close(want, _full(model, s), rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", KV_KINDS)
def test_rows_join_and_leave_between_steps(kind):
    model = build(**HYBRID)
    spec = SubnetSpec.from_dict({"hidden": 24, "mlp": 32, "attention_heads": 2, "mamba_heads": 3,
                                 "mamba_head_dim": 3, "layers": [0, 1, 2, 4, 5]}, model.config)
    g = torch.Generator().manual_seed(2)
    seqs = [torch.randint(0, 97, (n,), generator=g).tolist() for n in (20, 9, 14, 30)]
    pool_cache = model.new_batch_cache(0, kind)
    running, pos, got = None, {}, {i: [] for i in range(len(seqs))}

    def admit(i, cache_rows):  # prefill row i alone in a cache sharing the pool, then join the batch
        new = BatchCache.empty_rows(len(model.layers), 1, kind, pool_cache.pool)
        prompt = seqs[i][:5]
        got[i].append(_feed(model, new, [prompt], subnet=spec)[0])
        pos[i] = 5
        return new if cache_rows is None else BatchCache.concat([cache_rows, new])

    order = []
    for step in range(40):
        if step in (0, 3, 6, 10):
            i = [0, 3, 1, 2][[0, 3, 6, 10].index(step)]
            running, order = admit(i, running), order + [i]
        if not order:
            continue
        logits = _feed(model, running, [[seqs[i][pos[i]]] for i in order], subnet=spec)
        for b, i in enumerate(order):
            got[i].append(logits[b])
            pos[i] += 1
        done = [b for b, i in enumerate(order) if pos[i] == len(seqs[i])]
        if done:
            running = running.drop(done)
            order = [i for b, i in enumerate(order) if b not in done]
    assert not order
    for i, s in enumerate(seqs):
        torch.testing.assert_close(torch.cat(got[i]), _full(model, s, spec), rtol=0, atol=1e-10)
    if kind == "paged":  # every block came back: the pool reuses them
        pool = pool_cache.pool
        assert sorted(pool.free) == list(range(1, pool.size))
        assert pool.size - 1 <= sum(-(-len(s) // PAGE) for s in seqs)


def test_last_only_takes_each_rows_last_real_token():
    model = build(**HYBRID)
    cache = model.new_batch_cache(2)
    out = _feed(model, cache, [[1, 2, 3], [4]])
    cache2 = model.new_batch_cache(2)
    x = torch.tensor([[1, 2, 3], [4, 0, 0]])
    last = model(x, cache=cache2, counts=torch.tensor([3, 1]), last_only=True)
    torch.testing.assert_close(last[:, 0], torch.stack([out[0, 2], out[1, 0]]), rtol=0, atol=1e-12)


def test_bad_counts_and_kinds_are_refused():
    model = build(**HYBRID)
    with pytest.raises(ValueError, match="kv cache kind"):
        model.new_batch_cache(1, "ragged")
    with pytest.raises(ValueError, match="counts"):
        model(torch.zeros(2, 3, dtype=torch.long), cache=model.new_batch_cache(2), counts=torch.tensor([4, 1]))
    with pytest.raises(ValueError, match="counts"):
        model(torch.zeros(2, 3, dtype=torch.long), cache=model.new_batch_cache(3), counts=torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="BatchCache"):
        model(torch.zeros(1, 3, dtype=torch.long), counts=torch.tensor([1]))


@pytest.mark.parametrize("kind", KV_KINDS)
def test_relayout_between_sub_models_keeps_every_row_exact(kind):
    """A row decoded in its own sub-model's layout, moved to a wider union (another row of a bigger
    sub-model joins, masks per row) and back: every logit equals the row alone (batch_cache.relayout)."""
    from nemotron_elastic.model.masks import ElasticMasks
    from nemotron_elastic.model.batch_cache import relayout

    model = build(**HYBRID)
    small = SubnetSpec.from_dict({"hidden": 24, "mlp": 32, "attention_heads": 2, "mamba_heads": 3,
                                  "mamba_head_dim": 3, "layers": [0, 1, 2, 4, 5]}, model.config)
    big = SubnetSpec.from_dict({"hidden": 28, "mamba_heads": [3, 6], "mamba_head_dim": 4}, model.config)
    union = SubnetSpec.union([small, big])
    seq = torch.randint(0, 97, (12,), generator=torch.Generator().manual_seed(3)).tolist()
    cache = model.new_batch_cache(1, kind)
    got = [_feed(model, cache, [seq[:5]], subnet=small)[0]]
    relayout(cache, model, small, union)
    for t in range(5, 9):  # in the union's layout, masked to `small`
        got.append(_feed(model, cache, [[seq[t]]], subnet=ElasticMasks.per_row([small], union, torch.float64))[0])
    relayout(cache, model, union, small)
    for t in range(9, 12):
        got.append(_feed(model, cache, [[seq[t]]], subnet=small)[0])
    torch.testing.assert_close(torch.cat(got), _full(model, seq, small), rtol=0, atol=1e-10)
    assert union.hidden == 28 and union.layers == tuple(range(6)) and union.mamba_heads == (3, 6)


@pytest.mark.parametrize("spec", [None, {"hidden": 24, "mlp": 32, "attention_heads": 2, "mamba_heads": 3,
                                         "mamba_head_dim": 3, "layers": [0, 1, 2, 4, 5]}])
def test_a_ragged_step_packs_its_tokens_and_equals_each_row_alone(spec):
    """Prompt chunks next to one-token rows and a row fed nothing: the token-wise layers see the real tokens
    only (`RowStep.packed`: each MLP's input holds sum(counts) tokens), the one-token Mamba rows take one
    recurrent step together and the prompt rows one scan per chunk length (rows side by side or apart);
    every row equals itself alone (float64), for
    the parent and a sliced sub-model (kept Mamba / attention heads as runs), also under per-row masks
    (taken per token) of the same sub-model."""
    from nemotron_elastic.model.masks import ElasticMasks

    model = build(**HYBRID)
    sub = None if spec is None else SubnetSpec.from_dict(spec, model.config)
    g = torch.Generator().manual_seed(4)
    seqs = [torch.randint(0, 97, (n,), generator=g).tolist() for n in (9, 12, 7, 10)]
    seen = []
    hooks = [b.mixer.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[:2]))
             for b in model.layers if b.block_type == "-"]
    caches = {"packed": model.new_batch_cache(4), "per_row": model.new_batch_cache(4)}
    got = {k: [[] for _ in seqs] for k in caches}
    pieces_by_step = [[s[:3] for s in seqs],  # a ragged first prefill
                      [seqs[0][3:4], seqs[1][3:9], [], seqs[3][3:4]],  # a chunk next to one-token rows, one idle
                      [seqs[0][4:5], seqs[1][9:10], seqs[2][3:7], seqs[3][4:8]],  # two chunks of 4, side by side
                      [seqs[0][5:7], seqs[1][10:11], [], seqs[3][8:10]]]  # two chunks of 2, apart
    for pieces in pieces_by_step:
        for kind, cache in caches.items():
            seen.clear()
            subnet = sub
            if kind == "per_row":  # masks given per row, the same sub-model in every row here
                union = sub or SubnetSpec.full(model.config)
                subnet = ElasticMasks.per_row([union] * 4, union, torch.float64)
            logits = _feed(model, cache, pieces, subnet=subnet)
            real = sum(len(p) for p in pieces)
            width = max(len(p) for p in pieces)
            mlp_layers = len([i for i in (sub.layers if sub else range(6)) if model.layers[i].block_type == "-"])
            expect = (real, 1) if real < 4 * width else (4, width)
            assert seen == [expect] * mlp_layers
            for b, p in enumerate(pieces):
                got[kind][b].append(logits[b, : len(p)])
    for hook in hooks:
        hook.remove()
    for b, s in enumerate(seqs):
        n = sum(len(p[b]) for p in pieces_by_step)
        want = _full(model, s[:n], sub)
        for kind in caches:
            torch.testing.assert_close(torch.cat(got[kind][b]), want, rtol=0, atol=1e-10)


def test_pack_and_unpack_are_inverse_on_the_real_tokens():
    from nemotron_elastic.model.kv_store import RowStep

    step = RowStep(torch.zeros(3, dtype=torch.long), torch.tensor([2, 0, 3]), 3, packed=True)
    x = torch.arange(3 * 3 * 2, dtype=torch.float64).view(3, 3, 2)
    packed = step.pack(x)
    assert packed.shape == (5, 1, 2)
    torch.testing.assert_close(packed[:, 0], torch.cat([x[0, :2], x[2, :3]]))
    assert (step.flat // step.width).tolist() == [0, 0, 2, 2, 2]  # each token's row
    back = step.unpack(packed)
    torch.testing.assert_close(back, x * step.valid[..., None])


def test_a_packed_step_of_rows_of_different_sub_models_equals_each_row_alone():
    """Per-row masks (`mixed="widest"`: each row its own sub-model inside their union) in a ragged step: the
    masks follow the packed tokens (`ElasticMasks.take_rows`) and every row equals its sub-model alone."""
    from nemotron_elastic.model.masks import ElasticMasks

    model = build(**HYBRID)
    specs = [SubnetSpec.from_dict({"hidden": 24, "mlp": 32, "attention_heads": 2, "mamba_heads": 3,
                                   "mamba_head_dim": 3, "layers": [0, 1, 2, 4, 5]}, model.config),
             SubnetSpec.full(model.config),
             SubnetSpec.from_dict({"hidden": 28, "mamba_heads": [3, 6], "mamba_head_dim": 4}, model.config)]
    union = SubnetSpec.union(specs)
    masks = ElasticMasks.per_row(specs, union, torch.float64)
    g = torch.Generator().manual_seed(5)
    seqs = [torch.randint(0, 97, (10,), generator=g).tolist() for _ in specs]
    cache = model.new_batch_cache(3)
    steps = [[s[:2] for s in seqs], [seqs[0][2:3], seqs[1][2:8], seqs[2][2:3]], [seqs[0][3:7], [], seqs[2][3:4]]]
    got = [[] for _ in seqs]
    for pieces in steps:
        logits = _feed(model, cache, pieces, subnet=masks)
        for b, p in enumerate(pieces):
            got[b].append(logits[b, : len(p)])
    for b, (s, spec) in enumerate(zip(seqs, specs)):
        n = sum(len(p[b]) for p in steps)
        torch.testing.assert_close(torch.cat(got[b]), _full(model, s[:n], spec), rtol=0, atol=1e-10)
