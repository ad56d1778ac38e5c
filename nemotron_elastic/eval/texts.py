# SPDX-License-Identifier: Apache-2.0
"""Evaluation text: the held-out token stream for perplexity, and the passages of the shipped lm-eval tasks.

Default data is the default corpus' fixed held-out split (`data/corpus.py`: 2 Shakespeare works and 301
Wikipedia leads, never trained on); `--data PATH` reads the user's documents instead (`load_documents`:
text, jsonl, parquet, arrow files or folders).

- `token_stream`: documents tokenized without special tokens, each followed by EOS, exactly as training
  reads them (`data/shards.py`), cut at `max_tokens`. The default split's two sources get equal shares of
  the tokens: its two plays alone are longer than any usual cap, and a stream of one play would measure
  early-modern verse only.
- `passages`: documents cut at paragraph breaks into pieces of bounded length, sources interleaved, so
  that lm-eval's `--limit N` (the first N documents) samples every source.
- `cloze_items`: passages in the style of LAMBADA (Paperno et al. 2016, https://arxiv.org/abs/1606.06031):
  a run of whole sentences whose final word is to be predicted. LAMBADA kept passages where humans need
  the wider context; the automatic stand-in here keeps a passage only when its final word (3+ letters)
  already occurs earlier in the passage, so the context can help and a unigram guess rarely does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any

import torch

from ..data.corpus import SOURCES, default_corpus
from ..data.documents import load_documents
from ..data.tokenizer import encode_batch

DEFAULT_SOURCE = "default corpus held-out split"
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")  # a sentence ends at . ! ? (and closing quotes)
_WORD = re.compile(r"[A-Za-z]{3,}")
_TRAILING = "\"'.,;:!?)]}-_*"


@dataclass(frozen=True)
class EvalText:
    """A token stream to score.

    Attributes:
        token_ids: (N,) long.
        num_bytes: UTF-8 bytes of the stream's decoded text (special tokens skipped): the denominator of
            bits per byte.
        num_documents: documents that contributed tokens (the last one possibly cut).
        source: where the documents came from (a path or DEFAULT_SOURCE).
    """

    token_ids: torch.Tensor
    num_bytes: int
    num_documents: int
    source: str


def eval_documents(data: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """Documents per source: the default held-out split ({"shakespeare": ..., "wikipedia": ...}) or the
    user's data ({path: documents}).

    Raises:
        ValueError: a missing or unreadable path, or one without usable text (one line, from the reader).
    """
    if data is None:
        return {source: default_corpus("heldout", sources=(source,)) for source in SOURCES}
    return {str(data): load_documents(data)}


def _eos_id(tokenizer: Any) -> int | None:
    eos = getattr(tokenizer, "eos_token_id", None)
    return None if eos is None else int(eos)


def _source_tokens(tokenizer: Any, docs: Sequence[str], budget: int) -> tuple[list[int], int]:
    """The first `budget` tokens of one source's documents (each followed by EOS) and the documents used."""
    eos, ids, used, batch = _eos_id(tokenizer), [], 0, 16
    for start in range(0, len(docs), batch):
        if len(ids) >= budget:
            break
        for doc_ids in encode_batch(tokenizer, list(docs[start : start + batch])):
            if len(ids) >= budget:
                break
            ids.extend(doc_ids + ([eos] if eos is not None else []))
            used += 1
    return ids[:budget], used


def token_stream(
    tokenizer: Any, documents: dict[str, list[str]], max_tokens: int, source: str = DEFAULT_SOURCE
) -> EvalText:
    """Tokenize documents into one stream of at most `max_tokens` tokens, sources in equal shares.

    Args:
        tokenizer: a transformers tokenizer.
        documents: {source: documents}, as `eval_documents` returns.
        max_tokens: the cap; a source with fewer tokens leaves its share unused.
        source: the description stored in the result.

    Returns:
        The EvalText.

    Raises:
        ValueError: `max_tokens` < 2, or the documents give fewer than 2 tokens.
    """
    if max_tokens < 2:
        raise ValueError(f"--max-tokens: must be at least 2, got {max_tokens}")
    ids: list[int] = []
    num_docs = 0
    names = list(documents)
    for i, name in enumerate(names):
        share = (max_tokens - len(ids)) // (len(names) - i)  # what earlier sources left is shared on
        part, used = _source_tokens(tokenizer, documents[name], share)
        ids.extend(part)
        num_docs += used
    if len(ids) < 2:
        raise ValueError(f"{source}: the documents give {len(ids)} token(s); perplexity needs at least 2")
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return EvalText(torch.tensor(ids, dtype=torch.long), len(text.encode("utf-8")), num_docs, source)


def _paragraph_passages(doc: str, max_chars: int) -> list[str]:
    """Whole paragraphs grouped into passages of at most `max_chars` (a longer paragraph stands alone)."""
    out, current = [], ""
    for para in (p.strip() for p in re.split(r"\n\s*\n", doc)):
        if not para:
            continue
        if current and len(current) + 2 + len(para) > max_chars:
            out.append(current)
            current = ""
        current = f"{current}\n\n{para}" if current else para
    if current:
        out.append(current)
    return out


def passages(documents: dict[str, list[str]], max_chars: int = 2000) -> list[str]:
    """Every document cut into passages of whole paragraphs, the sources interleaved round-robin."""
    per_source = [
        [p for doc in docs for p in _paragraph_passages(doc, max_chars)] for docs in documents.values()
    ]
    return [p for group in zip_longest(*per_source) for p in group if p is not None]


def _cloze_word(word: str) -> str | None:
    """The target form of a final word ('world."' -> 'world'), or None when it is not a plain word."""
    stripped = word.strip(_TRAILING)
    return stripped if _WORD.fullmatch(stripped) else None


def _source_cloze_items(docs: list[str], min_words: int, max_words: int) -> list[str]:
    items = []
    for passage in passages({"": docs}, max_chars=4000):
        sentences = [s.split() for s in _SENTENCE_END.split(" ".join(passage.split())) if s.strip()]
        window: list[list[str]] = []
        for sentence in sentences:
            window.append(sentence)
            while sum(map(len, window)) > max_words and len(window) > 1:
                window.pop(0)  # slide: keep the most recent sentences within max_words
            words = [w for s in window for w in s]
            target = _cloze_word(words[-1])
            # All-capital words are left out: in the plays they are the speaker tags that end every
            # "sentence", and guessing the next speaker is not the task.
            if len(words) < min_words or target is None or target.isupper():
                continue
            if target.lower() in {w.strip(_TRAILING).lower() for w in words[:-1]}:
                items.append(" ".join([*words[:-1], target]))
                window = []  # items do not overlap
    return items


def cloze_items(
    documents: dict[str, list[str]], min_words: int = 40, max_words: int = 120, max_items: int | None = None
) -> list[str]:
    """LAMBADA-style passages: whole sentences, ending in a word that occurs earlier in the passage.

    Each item is one line of single-spaced words whose last word (punctuation stripped) is the target, so
    the LAMBADA templates apply unchanged: context `text.split(' ')[:-1]`, target `' ' + last word`.

    Args:
        documents: {source: documents}.
        min_words / max_words: passage length bounds, in words (a longer single sentence stands alone).
        max_items: keep the first this many items (None: all).

    Returns:
        The items, sources interleaved round-robin.
    """
    per_source = [_source_cloze_items(docs, min_words, max_words) for docs in documents.values()]
    items = [item for group in zip_longest(*per_source) for item in group if item is not None]
    return items if max_items is None else items[:max_items]
