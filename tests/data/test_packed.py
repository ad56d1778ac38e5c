# SPDX-License-Identifier: Apache-2.0
"""Packed token files: round trip, dtype choice, reuse, shuffling, exact resume, evaluation windows."""

import json

import numpy as np
import pytest
import torch
from data_testlib import SMALL_TEXTS, write_packed
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from nemotron_elastic.data import packed as packmod
from nemotron_elastic.data.packed import (
    PackedDataset,
    PackedTokens,
    eval_batches,
    pack_documents,
    token_dtype,
)


def test_round_trip(small_bpe, tmp_path):
    tok, _ = small_bpe
    docs = [*SMALL_TEXTS, "", "last one"]
    packed = pack_documents(docs, tok, tmp_path / "train.bin", batch_size=2, progress=False)
    expected = [i for d in docs if d for i in [*tok(d)["input_ids"], tok.eos_token_id]]
    assert packed.tokens.tolist() == expected
    meta = json.loads((tmp_path / "train.json").read_text())
    assert meta["num_tokens"] == len(expected) and meta["num_documents"] == len(SMALL_TEXTS) + 1
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == len(tok) and meta["eos_token_id"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.bin", "train.json"]  # no temp files
    # documents separated by EOS decode back to the texts
    parts = np.split(packed.tokens, np.flatnonzero(packed.tokens == 0) + 1)[:-1]
    assert [tok.decode(p[:-1].tolist()) for p in parts] == [d for d in docs if d]


def test_dtype_choice_by_vocab_size(tmp_path):
    assert token_dtype(4096) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32 and token_dtype(49152) == np.uint16
    # a 70,000-word vocabulary: ids above 65,535 must survive, so the file is uint32
    vocab = {f"w{i}": i for i in range(70_000)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="w1"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="w0")
    packed = pack_documents(["w69999 w65536 w5", "w7"], tok, tmp_path / "big.bin", progress=False)
    assert packed.meta.dtype == "uint32" and packed.tokens.dtype == np.uint32
    assert packed.tokens.tolist() == [69999, 65536, 5, 0, 7, 0]


def test_reuse_when_tokenizer_and_source_match(small_bpe, tmp_path, monkeypatch):
    tok, _ = small_bpe
    path = tmp_path / "train.bin"
    first = pack_documents(SMALL_TEXTS, tok, path, progress=False)
    stamp = path.stat().st_mtime_ns

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("re-tokenized although the packed file matches")

    monkeypatch.setattr(packmod, "encode_batch", no_tokenizing)
    again = pack_documents(list(SMALL_TEXTS), tok, path, progress=False)
    assert path.stat().st_mtime_ns == stamp and again.meta == first.meta
    monkeypatch.undo()
    changed = pack_documents([*SMALL_TEXTS, "one more document"], tok, path, progress=False)
    assert changed.meta.num_documents == len(SMALL_TEXTS) + 1 and changed.meta.source != first.meta.source


def test_bad_packed_files(small_bpe, tmp_path):
    tok, _ = small_bpe
    with pytest.raises(ValueError, match="no documents to pack"):
        pack_documents(["", ""], tok, tmp_path / "empty.bin", progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    path = tmp_path / "t.bin"
    pack_documents(SMALL_TEXTS, tok, path, progress=False)
    with open(path, "r+b") as f:
        f.truncate(10)
    with pytest.raises(ValueError, match="corrupt or incomplete"):
        PackedTokens(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(ValueError, match="not a packed token file"):
        PackedTokens(path)
    short = write_packed(tmp_path / "short.bin", np.arange(8))
    with pytest.raises(ValueError, match="fewer than one window"):
        PackedDataset(short, seq_len=8, batch_size=1)


def _starts(batches):
    """Window starts: the token files below hold arange, so a window's first token is its start."""
    return [int(s) for b in batches for s in b[:, 0]]


def test_windows_are_slices_and_each_epoch_a_permutation(tmp_path):
    n, seq_len = 1000, 16
    data = write_packed(tmp_path / "arange.bin", np.arange(n))
    ds = PackedDataset(data, seq_len=seq_len, batch_size=4, seed=3)
    windows = ds.num_windows
    assert windows == (n - 1 - (seq_len - 1)) // seq_len
    batches = [next(ds) for _ in range((2 * windows + 3) // 4)]
    for b in batches:
        assert b.shape == (4, seq_len + 1) and b.dtype == torch.int64
        assert torch.equal(b, b[:, :1] + torch.arange(seq_len + 1))  # contiguous slices of the stream
    starts = _starts(batches)
    epochs = starts[:windows], starts[windows : 2 * windows]
    for epoch in epochs:
        offset = epoch[0] % seq_len
        assert sorted(epoch) == [offset + i * seq_len for i in range(windows)]
    assert epochs[0] != epochs[1]  # a new order (and here a new offset) every epoch


def test_deterministic_shuffle(tmp_path):
    data = write_packed(tmp_path / "arange.bin", np.arange(500))
    a, b = (PackedDataset(data, 8, 3, seed=7) for _ in range(2))
    c = PackedDataset(data, 8, 3, seed=8)
    first = [next(a) for _ in range(10)]
    assert all(torch.equal(x, next(b)) for x in first)
    assert not all(torch.equal(x, next(c)) for x in first)


def test_exact_resume_across_epochs(tmp_path):
    data = write_packed(tmp_path / "arange.bin", np.arange(90))
    run = PackedDataset(data, seq_len=8, batch_size=3, seed=1)
    assert run.num_windows == 10  # 7 batches of 3 cross two epoch boundaries
    uninterrupted = [next(run) for _ in range(7)]
    first = PackedDataset(data, seq_len=8, batch_size=3, seed=1)
    for _ in range(3):
        next(first)
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON checkpoint
    resumed = PackedDataset(tmp_path / "arange.bin", seq_len=8, batch_size=3, seed=1)
    resumed.load_state_dict(state)
    assert all(torch.equal(x, next(resumed)) for x in uninterrupted[3:])
    with pytest.raises(ValueError, match="another stream: seed"):
        PackedDataset(data, seq_len=8, batch_size=3, seed=2).load_state_dict(state)


def test_ranks_split_each_global_batch(tmp_path):
    data = write_packed(tmp_path / "arange.bin", np.arange(300))
    single = PackedDataset(data, 8, batch_size=4, seed=5)
    ranks = [PackedDataset(data, 8, batch_size=2, seed=5, rank=r, world_size=2) for r in range(2)]
    for _ in range(6):
        assert torch.equal(next(single), torch.cat([next(r) for r in ranks]))


def test_eval_batches_cover_every_target_once(tmp_path):
    n = 103
    data = write_packed(tmp_path / "arange.bin", np.arange(n))
    batches = list(eval_batches(data, seq_len=10, batch_size=4))
    assert [tuple(b.shape) for b in batches] == [(4, 11), (4, 11), (2, 11), (1, 3)]
    targets = torch.cat([b[:, 1:].reshape(-1) for b in batches])
    assert targets.tolist() == list(range(1, n))
    assert _starts(batches) == list(range(0, n - 1, 10))
    limited = list(eval_batches(data, seq_len=10, batch_size=4, max_windows=5))
    assert _starts(limited) == [0, 10, 20, 30, 40]
