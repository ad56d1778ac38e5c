# SPDX-License-Identifier: Apache-2.0
"""`nemotron-elastic prepare`: documents -> token shards, once, before training (docs/DESIGN.md 3.10).

    OUT/manifest.json                 config, tokenizer fingerprint, per source: documents, tokens, skipped
    OUT/<source>/train-00000.bin/.idx token shards (data/shards.py), `shard_documents` documents each
    OUT/<source>/heldout-00000...     the source's held-out documents
    OUT/<source>/done.json            the source is complete

Documents stream from the source (never all in memory), in file order. Each goes to the held-out split when
the SHA-256 of "<seed>/<source>/<document number>" falls below `heldout_fraction` (by document, fixed by the
seed). Chat rows (`format: messages`) are rendered with the tokenizer's chat template; a tokenizer without
one falls back to a plain transcript ("role: content" turns separated by blank lines), with a warning.
Worker processes (`num_proc`) tokenize batches in order, so the output never depends on their number.

A killed prepare resumes: finished sources are kept, and within a source the finished shards are kept and
the documents they hold are skipped, so the shards written on resume are byte for byte those of an
uninterrupted run (shard boundaries depend only on document counts).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ..config.prepare import PrepareConfig, SourceConfig
from ..config.types import to_dict
from ..io import load_tokenizer, write_json
from .documents import iter_documents, source_files
from .shards import Shard, write_shard
from .tokenizer import encode_batch, tokenizer_hash

ROLES = ("system", "user", "assistant", "tool")
BATCH = 256  # documents per tokenizer call (and per worker task)
SPLITS = ("train", "heldout")


def transcript(turns: list[dict[str, str]]) -> str:
    """The fallback rendering of a conversation: "role: content" turns separated by blank lines (an
    assistant turn's `reasoning`, when present, comes first as "assistant (reasoning): ...")."""
    parts = []
    for turn in turns:
        if isinstance(turn.get("reasoning"), str) and turn["reasoning"]:
            parts.append(f"{turn['role']} (reasoning): {turn['reasoning']}")
        parts.append(f"{turn['role']}: {turn['content']}")
    return "\n\n".join(parts)


def _messages(source: SourceConfig, tokenizer: Any, counts: dict[str, int]) -> Iterator[str]:
    """Rendered conversations of a jsonl source; malformed rows are counted in counts["skipped"] (or, with
    `strict`, refused)."""
    template = getattr(tokenizer, "chat_template", None)
    if template is None:
        warnings.warn(f"source {source.name}: the tokenizer has no chat template; conversations are rendered as a "
                      "plain transcript (data/prepare.py `transcript`)", stacklevel=3)
    for path in source_files(Path(source.path)):
        if path.suffix.lower() not in (".jsonl", ".ndjson"):
            raise ValueError(f"{path}: messages are read from .jsonl files")
        with path.open(encoding="utf-8-sig") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                problem, turns = _turns(line, source.field)
                if problem is not None:
                    if source.strict:
                        raise ValueError(f"{path}:{lineno}: {problem}")
                    counts["skipped"] += 1
                    continue
                if template is None:
                    yield transcript(turns)
                else:
                    yield tokenizer.apply_chat_template(turns, tokenize=False)


def _turns(line: str, field: str) -> tuple[str | None, list[dict]]:
    """(what is wrong with the row or None, its turns)."""
    try:
        row = json.loads(line)
    except ValueError:
        return "not a JSON object line", []
    turns = row.get(field) if isinstance(row, dict) else None
    if not isinstance(turns, list) or not turns:
        return f"no '{field}' list", []
    for turn in turns:
        if not isinstance(turn, dict) or turn.get("role") not in ROLES:
            role = turn.get("role") if isinstance(turn, dict) else turn
            return f"unknown role {role!r} (expected one of {', '.join(ROLES)})", []
        if not isinstance(turn.get("content"), str):
            return f"a {turn['role']} turn whose content is not a string", []
    return None, turns


def documents(source: SourceConfig, tokenizer: Any, counts: dict[str, int]) -> Iterator[str]:
    """The source's documents after its filters (`min_chars`, `max_documents`), in order."""
    stream = (_messages(source, tokenizer, counts) if source.format == "messages"
              else iter_documents(source.path, source.field))
    kept = 0
    for doc in stream:
        if len(doc) < source.min_chars:
            counts["skipped"] += 1
            continue
        yield doc
        kept += 1
        if source.max_documents is not None and kept >= source.max_documents:
            return


def heldout(seed: int, source: str, number: int, fraction: float) -> bool:
    """Whether document `number` of `source` is held out (by document, fixed by the seed)."""
    digest = hashlib.sha256(f"{seed}/{source}/{number}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


_WORKER: dict[str, Any] = {}  # each worker process' own tokenizer, loaded once by `_init`


def _init(tokenizer_dir: str) -> None:
    _WORKER["tokenizer"] = load_tokenizer(tokenizer_dir, required=True)


def _encode(texts: list[str]) -> list[list[int]]:
    return encode_batch(_WORKER["tokenizer"], texts)


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
    """Tokenize one source into `out/<name>/` (resuming finished shards); returns its manifest entry."""
    from tqdm.auto import tqdm

    folder = out / source.name
    done = folder / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"{tokenizer_dir}: the tokenizer has no EOS token to put between documents")
    shards = {split: _finished(folder, split) for split in SPLITS}
    skip = {split: shards[split] * cfg.shard_documents for split in SPLITS}  # documents already in shards
    counts = {"skipped": 0}
    pending: dict[str, list[str]] = {split: [] for split in SPLITS}
    seen = {split: 0 for split in SPLITS}
    pool = None if cfg.num_proc == 1 else ProcessPoolExecutor(
        cfg.num_proc, mp_context=get_context("spawn"), initializer=_init, initargs=(str(tokenizer_dir),))

    def encode(texts: list[str]) -> list[list[int]]:
        # BATCH documents per call: one call per whole shard made prepare 0.64x a plain batch-encode loop,
        # BATCH per call 0.94x (benchmarks/results/data_speed.json)
        chunks = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
        parts = (encode_batch(tokenizer, c) for c in chunks) if pool is None else pool.map(_encode, chunks)
        return [ids for part in parts for ids in part]  # in order

    def flush(split: str) -> None:
        write_shard(folder / f"{split}-{shards[split]:05d}", encode(pending[split]), len(tokenizer), eos)
        shards[split] += 1
        pending[split] = []

    try:
        bar = tqdm(desc=f"prepare {source.name}", unit="doc", disable=not progress)
        for number, doc in enumerate(documents(source, tokenizer, counts)):
            split = "heldout" if heldout(cfg.seed, source.name, number, cfg.heldout_fraction) else "train"
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
    entry = {"name": source.name, **stats, "skipped": counts["skipped"]}
    write_json(done, entry)
    return entry


def prepare(cfg: PrepareConfig, tokenizer_dir: str | Path, out: str | Path, progress: bool = True) -> dict:
    """Prepare every source of `cfg` into `out` with the tokenizer of `tokenizer_dir`; returns the manifest.

    Raises:
        ValueError: a missing path or an empty source, a malformed row (strict), a tokenizer without EOS, or
            an `out` prepared with another config or tokenizer.
    """
    out, tokenizer_dir = Path(out), Path(tokenizer_dir)
    tokenizer = load_tokenizer(tokenizer_dir, required=True)
    head = {"format": "nemotron-elastic-prepared-v1", "tokenizer": tokenizer_hash(tokenizer),
            "vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id, "config": to_dict(cfg)}
    started = out / "prepare.json"  # what this folder is being prepared with
    if started.is_file():
        previous = json.loads(started.read_text())
        if previous != head:
            raise ValueError(f"{out}: prepared with another config or tokenizer; choose another --out")
    else:
        for source in cfg.sources:  # a missing path fails before anything is written
            if not Path(source.path).exists():
                raise ValueError(f"sources: {source.name}: {source.path} does not exist")
        out.mkdir(parents=True, exist_ok=True)
        write_json(started, head)
    sources = [prepare_source(s, cfg, tokenizer, tokenizer_dir, out, progress) for s in cfg.sources]
    manifest = {**head, "sources": {s["name"]: s for s in sources}}
    write_json(out / "manifest.json", manifest)
    return manifest
