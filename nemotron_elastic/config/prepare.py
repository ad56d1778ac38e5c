# SPDX-License-Identifier: Apache-2.0
"""The config of `nemotron-elastic prepare` (data/prepare.py): which sources to tokenize into shards.

    sources:
      - {name: chat, path: data/chat.jsonl, format: messages}       # field defaults: messages / text
      - {name: web, path: data/web.parquet, format: text, field: text}
      - {name: wiki, path: wikimedia/wikipedia, config_name: 20231101.en, split: train}   # a Hub dataset
      - {name: local, path: json, data_files: [a.jsonl, b.jsonl]}    # a `datasets` builder and its files
      - {name: default, path: "packaged:default"}                     # the packaged default corpus
    heldout_fraction: 0.01
    num_proc: 2
    seed: 0

Where a source is read from (data/sources.py): `packaged:NAME` is a corpus shipped with the package
(data/corpus.py); an existing local file or folder is read by data/documents.py (a saved `DatasetDict`
folder with `split` reads that split's folder); anything else, or a local path given with `split`,
`data_files` or `config_name`, goes to `datasets.load_dataset` (the `[data]` extra).

Loaded strictly (`config.yaml_io.load_yaml(PrepareConfig, path)`): unknown keys, wrong types and numbers
out of range are errors naming the dotted key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from .types import check_ranges

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a folder name on every filesystem
PACKAGED_SCHEME = "packaged:"


@dataclass(kw_only=True)
class SourceConfig:
    """One source: a file or folder of text / jsonl / parquet / arrow (`datasets.save_to_disk`) data, a
    `datasets` dataset, or a packaged corpus (`packaged:default`)."""

    name: str  # its folder under the output
    path: str
    format: Literal["text", "messages"] = "text"  # messages: a list of {role, content[, reasoning]} turns per row
    field: str | None = None  # the column / JSON field; default "text" or "messages"
    split: str | None = None  # a `datasets` split (default "train"), or a saved DatasetDict's split folder
    data_files: str | list[str] | None = None  # `datasets.load_dataset(path, data_files=...)`
    config_name: str | None = None  # `datasets.load_dataset(path, name=...)`
    max_documents: int | None = None  # stop after this many documents (a packaged source: per split)
    min_chars: int = 0  # skip documents shorter than this
    strict: bool = False  # messages: refuse a malformed row instead of skipping and counting it

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"name: {self.name!r} is not a plain folder name (letters, digits, _ . -)")
        check_ranges(self, max_documents="[1, inf)", min_chars="[0, inf)")
        if self.field is None:
            self.field = "messages" if self.format == "messages" else "text"
        if self.path.startswith(PACKAGED_SCHEME):
            if self.format != "text":
                raise ValueError(f"format: a packaged corpus ({self.path}) is text, not {self.format}")
            extra = [k for k in ("split", "data_files", "config_name") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"{extra[0]}: not for a packaged corpus ({self.path}); it has its own held-out split")

    @property
    def packaged(self) -> str | None:
        """The packaged corpus' name (`packaged:NAME`), or None for other sources."""
        return self.path[len(PACKAGED_SCHEME):] if self.path.startswith(PACKAGED_SCHEME) else None


@dataclass(kw_only=True)
class PrepareConfig:
    sources: list[SourceConfig] = field(default_factory=list)
    heldout_fraction: float = 0.01  # share of each source's documents held out (by document, fixed by seed)
    num_proc: int = 1  # tokenizer worker processes
    seed: int = 0
    # Documents per shard: shard boundaries depend on nothing else, so a resumed prepare writes the same bytes.
    shard_documents: int = 4096

    def __post_init__(self) -> None:
        check_ranges(self, heldout_fraction="[0, 1)", num_proc="[1, inf)", shard_documents="[1, inf)")
        if not self.sources:
            raise ValueError("sources: at least one source")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"sources: duplicate names in {names}")
