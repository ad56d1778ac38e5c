# SPDX-License-Identifier: Apache-2.0
"""A run's data: its config (`data:` and `stages[].data`, config/data.py) resolved to opened token streams.

    per stage:  the blend it trains on (its `data`, else `data.train`, else the packaged default corpus)
    held-out:   one stream per source, evaluated separately (`data.heldout`, else each source's held-out split)

Training opens prepared shards only (memory-mapped; nothing is tokenized or held in memory). Raw paths and
the packaged corpus are prepared first by `prepare` into `<workdir>/<hash of what is prepared>/`, once: by
rank 0, while the other ranks wait on a status file instead of in a collective (a collective would time out
on a large corpus); a resumed run finds them prepared. Raw training data keeps 2% of its documents for
evaluation unless `data.heldout` is given; held-out raw data is evaluated whole.

Every source must have been prepared with the run's tokenizer (the fingerprints in its `done.json` agree),
else the run is refused before it starts.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.data import DataConfig, require_paths, stage_blends
from ..config.prepare import PrepareConfig, SourceConfig
from ..config.types import to_dict
from ..io import write_json
from .blend import TokenStream
from .prepare import prepare
from .shards import open_source
from .tokenizer import tokenizer_hash

PACKAGED = "packaged:default"  # `data.train: null`: the packaged default corpus (data/corpus.py)
RAW_HELDOUT_FRACTION = 0.02  # raw training data without `data.heldout`: documents kept for evaluation
POLL_SECONDS = 1.0


@dataclass
class RunData:
    """stages: per stage, (training streams, weights); heldout: the evaluation streams, one per source."""

    stages: list[tuple[list[TokenStream], list[float]]]
    heldout: list[TokenStream]
    masked: bool  # `loss_on: assistant`


def is_prepared(path: str | Path) -> bool:
    """A prepared source folder (`prepare`'s `OUT/<source>`)."""
    return (Path(path) / "done.json").is_file()


def _name(path: str, taken: set[str]) -> str:
    """A source name (a folder name) for raw data at `path`, unique among `taken`."""
    base = "default" if path == PACKAGED else re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path).name).lstrip("._-") or "data"
    name, i = base, 1
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def _prepare_config(paths: list[str], fraction: float, seed: int) -> PrepareConfig:
    taken: set[str] = set()
    sources = [SourceConfig(name=_name(p, taken), path=p if p == PACKAGED else str(Path(p).resolve())) for p in paths]
    return PrepareConfig(sources=sources, heldout_fraction=fraction, seed=seed)


def _folder(workdir: Path, cfg: PrepareConfig, tokenizer_fp: str) -> Path:
    """Where `cfg` is prepared: named by a hash of it and the tokenizer, so a changed config never reuses (or is
    refused by) another's folder."""
    key = json.dumps({"config": to_dict(cfg), "tokenizer": tokenizer_fp}, sort_keys=True)
    return workdir / f"prepared-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def prepare_raw(cfg: PrepareConfig, tokenizer_dir: Path, out: Path, is_main: bool, token: str,
                progress: bool) -> None:
    """Rank 0 prepares `cfg` into `out` and writes `out/status.json` = {token, ok[, error]}; the other ranks
    poll for that status with this launch's `token` (a failure on rank 0 is raised on every rank)."""
    status = out / "status.json"
    if is_main:
        try:
            prepare(cfg, tokenizer_dir, out, progress=progress)
        except Exception as e:
            out.mkdir(parents=True, exist_ok=True)
            write_json(status, {"token": token, "ok": False, "error": str(e)})
            raise
        write_json(status, {"token": token, "ok": True})
        return
    while True:
        try:
            state = json.loads(status.read_text())
        except (OSError, ValueError):  # not there yet (or being replaced)
            state = {}
        if state.get("token") == token:
            if not state["ok"]:
                raise ValueError(f"data: rank 0 failed to prepare the data: {state['error']}")
            return
        time.sleep(POLL_SECONDS)


def _stream(source: Any, split: str, fingerprint: str, masked: bool) -> TokenStream:
    shards = source.train if split == "train" else source.heldout
    masks = [s.mask for s in shards] if masked and source.mask else None
    return TokenStream(source.name, [s.tokens for s in shards], masks, fingerprint)


def resolve_data(data: DataConfig, stages: list[Any], tokenizer: Any, tokenizer_dir: Path, workdir: Path, *,
                 is_main: bool = True, token: str = "", seed: int = 0, progress: bool = True,
                 who: str = "the parent") -> RunData:
    """Open (preparing raw paths first) every stage's blend and the held-out streams.

    Args:
        data: the run's `data:` section; stages: its stages (each may have `data`).
        tokenizer, tokenizer_dir: the run's tokenizer (sources must be prepared with it) and its folder.
        workdir: where raw paths are prepared.
        is_main, token: rank 0 prepares; the others wait for the status of launch `token`.
        who: whose tokenizer it is, for the mismatch message.

    Raises:
        ValueError: a missing path, a source prepared with another tokenizer, a stage too short for one
            window is found later (`SourceWindows`), no held-out documents, `loss_on: assistant` without a
            chat source.
    """
    require_paths(data, stages)
    blends = stage_blends(data, stages, PACKAGED)
    heldout = [data.heldout] if isinstance(data.heldout, str) else data.heldout
    for where, parts in blends:
        for j, part in enumerate(parts):
            if part.path != PACKAGED and not Path(part.path).exists():
                raise ValueError(f"{where}[{j}].path: {part.path} does not exist")
    for j, path in enumerate(heldout or []):
        if not Path(path).exists():
            raise ValueError(f"data.heldout[{j}]: {path} does not exist")

    fp = tokenizer_hash(tokenizer)
    raw_train = sorted({p.path for _, parts in blends for p in parts if not is_prepared(p.path)})
    raw_held = [p for p in heldout or [] if not is_prepared(p)]
    opened: dict[str, Any] = {}  # path -> PreparedSource
    for paths, fraction, split_key in ((raw_train, 0.0 if heldout else RAW_HELDOUT_FRACTION, "train"),
                                       (raw_held, 0.0, "heldout")):
        if not paths:
            continue
        cfg = _prepare_config(paths, fraction, seed)
        out = _folder(workdir, cfg, fp)
        prepare_raw(cfg, tokenizer_dir, out, is_main, f"{token}/{split_key}", progress)
        for path, source in zip(paths, cfg.sources):
            opened[(split_key, path)] = open_source(out / source.name)
    for where, parts in blends:
        for j, part in enumerate(parts):
            if ("train", part.path) not in opened:
                opened[("train", part.path)] = _checked(open_source(Path(part.path)), fp, f"{where}[{j}].path", who)
    for j, path in enumerate(heldout or []):
        if ("heldout", path) not in opened:
            opened[("heldout", path)] = _checked(open_source(Path(path)), fp, f"data.heldout[{j}]", who)

    masked = data.loss_on == "assistant"
    if masked and not any(source.mask for source in opened.values()):
        raise ValueError("data.loss_on: assistant needs a chat source (prepared with format: messages); "
                         "no source of this run has assistant masks")
    prints = {key: _fingerprint(source) for key, source in opened.items()}
    stage_streams = []
    for _, parts in blends:
        streams = [_stream(opened[("train", p.path)], "train", prints[("train", p.path)], masked) for p in parts]
        stage_streams.append((streams, [p.weight for p in parts]))
    if heldout is None:  # every training source's own held-out split, in order of first use
        keys = list(dict.fromkeys(("train", p.path) for _, parts in blends for p in parts))
        evals = [_stream(opened[k], "heldout", prints[k], masked) for k in keys]
    else:  # raw held-out data whole (prepared with no held-out split), prepared folders on their held-out split
        evals = [_stream(opened[("heldout", p)], "train" if p in raw_held else "heldout", prints[("heldout", p)],
                         masked) for p in heldout]
    empty = [s.name for s in evals if len(s) < 2]
    if len(empty) == len(evals):
        raise ValueError("data.heldout: no held-out documents (the sources' held-out splits are empty); give "
                         "data.heldout, or more documents")
    evals = [s for s in evals if len(s) >= 2]
    names = [s.name for s in evals]
    for s in evals:  # the report keys must be unique
        if names.count(s.name) > 1:
            s.name = f"{s.name}@{s.fingerprint[:6]}"
    return RunData(stage_streams, evals, masked)


def _checked(source: Any, fingerprint: str, where: str, who: str) -> Any:
    if source.tokenizer != fingerprint:
        raise ValueError(f"{where}: {source.path} was prepared with another tokenizer ({source.tokenizer}) than "
                         f"{who}'s ({fingerprint}); prepare it again with that tokenizer")
    return source


def _fingerprint(source: Any) -> str:
    """What identifies a prepared source's data: a hash of its done.json (counts, tokenizer)."""
    text = (Path(source.path) / "done.json").read_text(encoding="utf-8")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_blend_sizes(run: RunData, tokens_per_stage: Callable[[int], int], limit: int, allow_repeat: bool) -> None:
    """Refuse a run that reads some source's training tokens more than `limit` times (`data.allow_repeat`)."""
    if allow_repeat:
        return
    reads: dict[str, float] = {}
    sizes: dict[str, int] = {}
    for i, (streams, weights) in enumerate(run.stages):
        planned = tokens_per_stage(i)
        for stream, w in zip(streams, weights):
            reads[stream.name] = reads.get(stream.name, 0.0) + planned * w / sum(weights)
            sizes[stream.name] = len(stream)
    for name, planned in reads.items():
        if planned > limit * sizes[name]:
            raise ValueError(
                f"data.train: the stages read {planned:,.0f} tokens, {planned / sizes[name]:,.0f}x the {sizes[name]:,} "
                f"training tokens of source {name}; give more data, fewer steps, or data.allow_repeat: true")
