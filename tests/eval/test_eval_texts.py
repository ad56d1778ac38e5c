# SPDX-License-Identifier: Apache-2.0
"""eval.texts: the held-out token stream (caps, shares, EOS separators, bytes) and the task passages."""

import pytest

from nemotron_elastic.eval.texts import cloze_items, eval_documents, passages, token_stream
from nemotron_elastic.io import load_tokenizer

DOCS = {
    "a": ["First document of a. It has two sentences.", "Second document of a."],
    "b": ["Only document of b, a little longer than the others are."],
}


@pytest.fixture(scope="module")
def tokenizer(elastic_dir):
    return load_tokenizer(elastic_dir)


def test_stream_is_documents_with_eos_and_counts_decoded_bytes(tokenizer):
    text = token_stream(tokenizer, DOCS, max_tokens=10_000, source="test")
    ids = text.token_ids.tolist()
    eos = tokenizer.eos_token_id
    assert ids.count(eos) == 3 and ids[-1] == eos  # every document is followed by EOS, as in training
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert text.num_bytes == len(decoded.encode("utf-8")) and "Second document" in decoded
    assert text.num_documents == 3 and text.source == "test"


def test_stream_cap_is_shared_between_sources(tokenizer):
    text = token_stream(tokenizer, DOCS, max_tokens=12)
    ids = text.token_ids.tolist()
    first_b = tokenizer(DOCS["b"][0], add_special_tokens=False)["input_ids"][:6]
    assert len(ids) == 12 and ids[6:] == first_b  # 6 tokens of a, then 6 of b
    with pytest.raises(ValueError, match="at least 2"):
        token_stream(tokenizer, DOCS, max_tokens=1)


def test_missing_data_path_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder"):
        eval_documents(tmp_path / "nope")
    (tmp_path / "doc.txt").write_text("Some user text.")
    assert eval_documents(tmp_path) == {str(tmp_path): ["Some user text."]}


def test_passages_interleave_sources_and_keep_paragraphs():
    docs = {"x": ["p1\n\np2\n\np3"], "y": ["q1"]}
    assert passages(docs, max_chars=6) == ["p1\n\np2", "q1", "p3"]


def test_cloze_items_end_in_a_word_seen_before():
    sentence = "The lighthouse keeper walked along the shore every night. "
    story = sentence * 3 + "Every sailor in the harbour trusted the old keeper."
    [item] = cloze_items({"s": [story]}, min_words=35)  # only the whole story is long enough
    words = item.split(" ")
    assert words[-1] == "keeper" and "keeper" in words[:-1] and "  " not in item
    assert cloze_items({"s": ["THE KING. " * 30]}, min_words=5) == []  # speaker tags are not targets
