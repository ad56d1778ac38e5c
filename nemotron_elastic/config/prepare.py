# SPDX-License-Identifier: Apache-2.0
"""The config of `nemotron-elastic prepare` (data/prepare.py): which sources to tokenize into shards.

    sources:
      - {name: chat, path: data/chat.jsonl, format: messages}       # field defaults: messages / text
      - {name: web, path: data/web.parquet, format: text, field: text}
    heldout_fraction: 0.01
    num_proc: 2
    seed: 0

Loaded strictly (`config.yaml_io.load_yaml(PrepareConfig, path)`): unknown keys, wrong types and numbers
out of range are errors naming the dotted key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from .types import check_ranges

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a folder name on every filesystem


@dataclass(kw_only=True)
class SourceConfig:
    """One source: a file or folder of text / jsonl / parquet / arrow (`datasets.save_to_disk`) data."""

    name: str  # its folder under the output
    path: str
    format: Literal["text", "messages"] = "text"  # messages: a list of {role, content} turns per row
    field: str | None = None  # the column / JSON field; default "text" or "messages"
    max_documents: int | None = None  # stop after this many documents (None: all)
    min_chars: int = 0  # skip documents shorter than this
    strict: bool = False  # messages: refuse a malformed row instead of skipping and counting it

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"name: {self.name!r} is not a plain folder name (letters, digits, _ . -)")
        check_ranges(self, max_documents="[1, inf)", min_chars="[0, inf)")
        if self.field is None:
            self.field = "messages" if self.format == "messages" else "text"


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
