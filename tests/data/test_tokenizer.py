# SPDX-License-Identifier: Apache-2.0
"""Byte-level BPE: training, lossless round trips, AutoTokenizer loading, hashing, reuse, bad files."""

import pytest
from data_testlib import SMALL_TEXTS
from transformers import AutoTokenizer

from nemotron_elastic.data import tokenizer as tokmod
from nemotron_elastic.data.tokenizer import (
    EOS_TOKEN,
    PAD_TOKEN,
    encode_batch,
    ensure_bpe,
    tokenizer_hash,
    train_bpe,
)
from nemotron_elastic.io import load_tokenizer

ROUND_TRIP = [
    "The quick brown fox.",
    "  leading spaces, double  spaces\n\n\ttabs and new lines\n",
    "Unseen bytes: caf\u00e9, \u00fcber, \u2603, \U0001d11e, \u4e2d\u6587, emoji \U0001f600",
    "",
]


def test_trained_bpe_loads_with_autotokenizer_and_round_trips(small_bpe):
    tok, folder = small_bpe
    assert (folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file()
    loaded = AutoTokenizer.from_pretrained(str(folder))
    assert len(loaded) == len(tok) <= 320
    assert loaded.eos_token == loaded.bos_token == EOS_TOKEN and loaded.pad_token == PAD_TOKEN
    assert (loaded.eos_token_id, loaded.pad_token_id) == (0, 1)
    for text in ROUND_TRIP:
        ids = loaded(text)["input_ids"]
        assert 0 not in ids and 1 not in ids  # no special tokens are added on encode
        assert loaded.decode(ids) == text
    # merges were learnt: a frequent word is fewer tokens than bytes
    assert len(loaded("The quick brown fox")["input_ids"]) < len("The quick brown fox")
    assert encode_batch(loaded, ["brown fox"]) == [loaded("brown fox")["input_ids"]]


def test_training_is_deterministic_and_hash_tracks_content(small_bpe):
    tok, folder = small_bpe
    again = train_bpe(SMALL_TEXTS, vocab_size=320)
    assert tokenizer_hash(again) == tokenizer_hash(tok) == tokenizer_hash(load_tokenizer(folder))
    other = train_bpe(SMALL_TEXTS, vocab_size=300)
    assert tokenizer_hash(other) != tokenizer_hash(tok)


def test_vocab_size_too_small():
    with pytest.raises(ValueError, match="at least 259"):
        train_bpe(SMALL_TEXTS, vocab_size=258)


def test_corrupt_or_missing_tokenizer_is_one_clear_line(small_bpe, tmp_path):
    _, folder = small_bpe
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((folder / name).read_bytes())
    text = (broken / "tokenizer.json").read_text()
    (broken / "tokenizer.json").write_text(text[: len(text) // 2])  # truncated mid-file
    for path, match in [
        (broken, "corrupt or unreadable tokenizer"),
        (tmp_path / "nowhere", "no such tokenizer folder"),
        (tmp_path, "no tokenizer files"),
    ]:
        with pytest.raises(ValueError, match=match) as err:
            load_tokenizer(path)
        assert "\n" not in str(err.value)


def test_ensure_bpe_reuses_a_matching_folder(tmp_path, monkeypatch):
    folder = tmp_path / "bpe"
    first = ensure_bpe(folder, vocab_size=300, documents=lambda: SMALL_TEXTS, source="small")

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although the folder matches")

    monkeypatch.setattr(tokmod, "train_bpe", no_training)
    again = ensure_bpe(folder, vocab_size=300, documents=lambda: SMALL_TEXTS, source="small")
    assert tokenizer_hash(again) == tokenizer_hash(first)
    monkeypatch.undo()
    bigger = ensure_bpe(folder, vocab_size=320, documents=lambda: SMALL_TEXTS, source="small")
    assert tokenizer_hash(bigger) != tokenizer_hash(first)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left
    precious = tmp_path / "model"
    precious.mkdir()
    (precious / "config.yaml").write_text("keep me")
    with pytest.raises(ValueError, match="is not a BPE folder"):
        ensure_bpe(precious, vocab_size=300, documents=lambda: SMALL_TEXTS, source="small")
    assert (precious / "config.yaml").read_text() == "keep me"
