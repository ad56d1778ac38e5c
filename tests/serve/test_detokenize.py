# SPDX-License-Identifier: Apache-2.0
"""Incremental detokenization and stop strings: streamed pieces always join to the non-streamed text."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nemotron_elastic.serve.text import IncrementalDetokenizer, StopMatcher


@pytest.fixture(scope="module")
def tokenizer(engine):
    return engine.tokenizer


def detokenize(tokenizer, ids):
    detok = IncrementalDetokenizer(lambda ids: tokenizer.decode(ids, skip_special_tokens=True))
    pieces = [detok.push(i) for i in ids]
    return pieces, pieces + [detok.flush()]


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.integers(0, 299), max_size=40))
def test_deltas_join_to_the_full_decode(tokenizer, ids):
    # random ids split multi-byte characters across tokens and put special tokens anywhere
    _, pieces = detokenize(tokenizer, ids)
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True)


def test_a_split_character_is_held_back_until_complete(tokenizer):
    text = "caf\u00e9 \u2603 ok"
    byte_ids = [tokenizer.convert_tokens_to_ids(t) for t in tokenizer.tokenize(text)]
    pieces, joined = detokenize(tokenizer, byte_ids)
    assert "".join(joined) == text
    assert all("\ufffd" not in p for p in pieces)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet="abc\n", max_size=30),
    cuts=st.lists(st.integers(0, 30), max_size=6),
    stops=st.lists(st.text(alphabet="abc\n", min_size=1, max_size=4), max_size=3),
)
def test_stop_matcher_cuts_where_a_stop_string_first_completes(text, cuts, stops):
    bounds = sorted({0, len(text), *[min(c, len(text)) for c in cuts]})
    matcher, out, stopped = StopMatcher(stops), [], False
    for a, b in itertools.pairwise(bounds):
        piece, stopped = matcher.feed(text[a:b])
        out.append(piece)
        if stopped:
            break
    if not stopped:
        out.append(matcher.flush())
    expected, reached = text, False
    for end in range(1, len(text) + 1):  # the text generated one character at a time
        starts = [end - len(s) for s in stops if text[:end].endswith(s)]
        if starts:
            expected, reached = text[: min(starts)], True
            break
    assert "".join(out) == expected
    assert stopped == reached


def test_engine_tokenizer_calls_are_safe_from_many_threads(engine):
    import threading

    errors = []

    def work(i):
        try:
            for j in range(200):
                if (i + j) % 2:
                    assert engine.encode("The quick brown fox") == engine.encode("The quick brown fox")
                else:
                    engine.decode(list(range(2, 40)))
        except Exception as err:  # noqa: BLE001  collected and reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
