# SPDX-License-Identifier: Apache-2.0
"""Fixtures for the data-layer tests (helpers live in data_testlib.py)."""

import pytest
from data_testlib import SMALL_TEXTS

from nemotron_elastic.data.tokenizer import train_bpe


@pytest.fixture(scope="session")
def small_bpe(tmp_path_factory):
    """A 320-token byte-level BPE trained on SMALL_TEXTS and saved: (tokenizer, folder)."""
    folder = tmp_path_factory.mktemp("bpe") / "tok"
    return train_bpe(SMALL_TEXTS, vocab_size=320, out_dir=folder), folder
