# SPDX-License-Identifier: Apache-2.0
"""Data: corpora, tokenizers, `prepare`'s token shards and the training blends (the submodules), and the packaged held-out text.

Sources and licences of the files shipped in this folder are in its README.md.
"""

from __future__ import annotations

from importlib.resources import files

HELDOUT_FILE = "heldout.txt"


def heldout_text() -> str:
    """The packaged held-out English text (chapter II of H. G. Wells' *The Time Machine*, public domain).

    It is the `perplexity` command's default text and the demo's metric. It is not part of the default
    training corpus (Shakespeare's works and Wikipedia leads), so the numbers measure generalisation.

    Returns:
        The text, about 11,000 characters (2,650 SmolLM2 tokens).
    """
    return files(__name__).joinpath(HELDOUT_FILE).read_text(encoding="utf-8")
