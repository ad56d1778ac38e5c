# SPDX-License-Identifier: Apache-2.0
"""`nemotron-elastic prepare`: documents -> token shards, once, before training (docs/DESIGN.md 3.10).

    OUT/manifest.json                 config, tokenizer fingerprint, per source: documents, tokens, skipped
    OUT/<source>/train-00000.bin/.idx token shards (data/shards.py), `shard_documents` documents each, and a
                                      `.mask` of assistant tokens for a chat source
    OUT/<source>/heldout-00000...     the source's held-out documents
    OUT/<source>/done.json            the source is complete, and what it was prepared with (`open_source`)

Documents stream from the source (data/sources.py: files, `datasets`, a packaged corpus; never all in
memory), in order. Each goes to the held-out split when the SHA-256 of "<seed>/<source>/<document number>"
falls below `heldout_fraction` (by document, fixed by the seed); a packaged corpus keeps its own fixed split.
Chat rows (`format: messages`) are rendered with the tokenizer's chat template, which also gives each token's
assistant mask (data/chat.py); a tokenizer without one falls back to a plain transcript ("role: content"
turns separated by blank lines), with a warning. Worker processes (`num_proc`) tokenize batches in order, so
the output never depends on their number.

Every source is opened and its first row read before anything is written, so bad input (a missing path or
column, a dataset that cannot be loaded offline) fails in one line with nothing on disk. A killed prepare
resumes: finished sources are kept, and within a source the finished shards are kept and the documents they
hold are skipped, so the shards written on resume are byte for byte those of an uninterrupted run (shard
boundaries depend only on document counts).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ..config.prepare import PrepareConfig, SourceConfig
from ..config.types import to_dict
from ..io import load_tokenizer, write_json
from . import sources
from .chat import Renderer, RowProblem, check_turns, encode_masked, transcript
from .shards import PREPARED_FORMAT, Shard, write_shard
from .tokenizer import encode_batch, tokenizer_hash

__all__ = ["heldout", "prepare", "prepare_source", "transcript"]

BATCH = 256  # documents per tokenizer call (and per worker task)
SPLITS = ("train", "heldout")


def _conversations(source: SourceConfig, tokenizer: Any, counts: Counter) -> Iterator[tuple[tuple, None]]:
    """((rendered text, assistant spans), None) of each chat row; malformed rows are counted in
    counts["skipped"] (or, with `strict`, refused with their place)."""
    render = Renderer(tokenizer, source.name)
    for where, value, problem in sources.records(source):
        rendered = None
        if problem is None:
            problem, turns = check_turns(value, source.field)
        if problem is None:
            try:
                rendered = render(turns)
            except RowProblem as e:
                problem = str(e)
        if rendered is not None:
            yield rendered, None
            continue
        if source.strict:
            raise ValueError(f"{where}: {problem}")
        counts["skipped"] += 1


def documents(source: SourceConfig, tokenizer: Any, counts: Counter) -> Iterator[tuple[Any, str | None]]:
    """(document, its fixed split or None) of the source after its filters (`min_chars`, `max_documents`; a
    source with its own splits keeps `max_documents` of each), in order. A document is a text, or for a chat
    source (rendered text, assistant spans)."""
    chat = source.format == "messages"
    stream = _conversations(source, tokenizer, counts) if chat else sources.texts(source)
    kept: Counter = Counter()
    for doc, split in stream:
        if len(doc[0] if chat else doc) < source.min_chars:
            counts["skipped"] += 1
            continue
        if source.max_documents is not None and kept[split] >= source.max_documents:
            if split is None:
                return
            continue
        kept[split] += 1
        yield doc, split


def heldout(seed: int, source: str, number: int, fraction: float) -> bool:
    """Whether document `number` of `source` is held out (by document, fixed by the seed)."""
    digest = hashlib.sha256(f"{seed}/{source}/{number}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


_WORKER: dict[str, Any] = {}  # each worker process' own tokenizer, loaded once by `_init`


def _init(tokenizer_dir: str) -> None:
    _WORKER["tokenizer"] = load_tokenizer(tokenizer_dir, required=True)


def _encode(texts: list[str]) -> list[list[int]]:
    return encode_batch(_WORKER["tokenizer"], texts)


def _encode_masked(items: list[tuple]) -> list[tuple]:
    return encode_masked(_WORKER["tokenizer"], items)


def _finished(folder: Path, split: str) -> int:
    """Finished shards of a split, counted from 0 (a shard is finished when its index opens)."""
    n = 0
    while True:
        try:
            Shard(folder / f"{split}-{n:05d}", verify=False)
        except ValueError:
            return n
        n += 1


def prepare_source(source: SourceConfig, cfg: PrepareConfig, tokenizer: Any, tokenizer_dir: Path, out: Path,
                   progress: bool = True) -> dict[str, Any]:
    """Tokenize one source into `out/<name>/` (resuming finished shards); returns its done.json entry."""
    from tqdm.auto import tqdm

    folder = out / source.name
    done = folder / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    eos = tokenizer.eos_token_id
    chat = source.format == "messages"
    shards = {split: _finished(folder, split) for split in SPLITS}
    skip = {split: shards[split] * cfg.shard_documents for split in SPLITS}  # documents already in shards
    counts: Counter = Counter(skipped=0)
    pending: dict[str, list] = {split: [] for split in SPLITS}
    seen = {split: 0 for split in SPLITS}
    pool = None if cfg.num_proc == 1 else ProcessPoolExecutor(
        cfg.num_proc, mp_context=get_context("spawn"), initializer=_init, initargs=(str(tokenizer_dir),))

    def encode(docs: list) -> list:
        # BATCH documents per call: one call per whole shard made prepare 0.64x a plain batch-encode loop,
        # BATCH per call 0.94x (benchmarks/results/data_speed.json)
        chunks = [docs[i : i + BATCH] for i in range(0, len(docs), BATCH)]
        if pool is not None:
            parts = pool.map(_encode_masked if chat else _encode, chunks)
        else:
            parts = ((encode_masked if chat else encode_batch)(tokenizer, c) for c in chunks)
        return [encoded for part in parts for encoded in part]  # in order

    def flush(split: str) -> None:
        encoded = encode(pending[split])
        ids, masks = ([e[0] for e in encoded], [e[1] for e in encoded]) if chat else (encoded, None)
        write_shard(folder / f"{split}-{shards[split]:05d}", ids, len(tokenizer), eos, masks=masks)
        shards[split] += 1
        pending[split] = []

    try:
        bar = tqdm(desc=f"prepare {source.name}", unit="doc", disable=not progress)
        for number, (doc, fixed) in enumerate(documents(source, tokenizer, counts)):
            split = fixed or ("heldout" if heldout(cfg.seed, source.name, number, cfg.heldout_fraction) else "train")
            seen[split] += 1
            bar.update(1)
            if seen[split] <= skip[split]:  # already in a finished shard
                continue
            pending[split].append(doc)
            if len(pending[split]) == cfg.shard_documents:
                flush(split)
        for split in SPLITS:
            if pending[split]:
                flush(split)
        bar.close()
    finally:
        if pool is not None:
            pool.shutdown()
    if seen["train"] == 0:
        raise ValueError(f"source {source.name}: no documents for training in {source.path}")
    stats = {}
    for split in SPLITS:  # the totals, read back from every shard (also the ones a resumed run kept)
        opened = [Shard(folder / f"{split}-{i:05d}", verify=False) for i in range(shards[split])]
        stats[split] = {"documents": sum(len(s) for s in opened), "tokens": sum(len(s.tokens) for s in opened),
                        "shards": shards[split]}
    entry = {"name": source.name, "prepared_format": PREPARED_FORMAT, "tokenizer": tokenizer_hash(tokenizer),
             "vocab_size": len(tokenizer), "eos_token_id": eos, "format": source.format, "mask": chat,
             **stats, "skipped": counts["skipped"]}
    write_json(done, entry)
    return entry


def prepare(cfg: PrepareConfig, tokenizer_dir: str | Path, out: str | Path, progress: bool = True) -> dict:
    """Prepare every source of `cfg` into `out` with the tokenizer of `tokenizer_dir`; returns the manifest.

    Raises:
        ValueError: one line: a source that cannot be read (a missing path or column, an unknown packaged
            corpus, a dataset that cannot be loaded) or is empty, a malformed row (strict), a tokenizer without
            EOS, or an `out` prepared with another config or tokenizer.
    """
    out, tokenizer_dir = Path(out), Path(tokenizer_dir)
    tokenizer = load_tokenizer(tokenizer_dir, required=True)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{tokenizer_dir}: the tokenizer has no EOS token to put between documents")
    head = {"format": PREPARED_FORMAT, "tokenizer": tokenizer_hash(tokenizer),
            "vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id, "config": to_dict(cfg)}
    started = out / "prepare.json"  # what this folder is being prepared with
    if started.is_file() and json.loads(started.read_text()) != head:
        raise ValueError(f"{out}: prepared with another config or tokenizer; choose another --out")
    for source in cfg.sources:  # bad input fails here, before anything is written
        if not (out / source.name / "done.json").is_file():
            sources.check(source)
    if not started.is_file():
        out.mkdir(parents=True, exist_ok=True)
        write_json(started, head)
    entries = [prepare_source(s, cfg, tokenizer, tokenizer_dir, out, progress) for s in cfg.sources]
    manifest = {**head, "sources": {e["name"]: e for e in entries}}
    write_json(out / "manifest.json", manifest)
    return manifest
