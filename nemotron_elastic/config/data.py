# SPDX-License-Identifier: Apache-2.0
"""The `data:` section of run configs and a stage's `data:` override: which prepared sources a run trains on,
blended by weight (docs/DESIGN.md 3.10).

    data:
      train:                                  # a weighted blend of prepared sources (`nemotron-elastic prepare`)
        - {path: prepared/chat, weight: 0.7}
        - {path: prepared/web, weight: 0.3}
      loss_on: assistant                      # chat sources: the KD loss counts assistant tokens only
    stages:
      - {name: stage1, ...}                   # reads data.train
      - {name: stage2, ..., data: [{path: prepared/reasoning}]}

A path is a prepared source folder (`OUT/<source>` of `prepare`), or raw data (a text / jsonl / parquet /
arrow file or folder), which small runs may give: it is prepared into the run's `data.workdir` once, by rank
0, before training starts. A single path is a blend of one (`train: prepared/web`). `train: null` is the
packaged default corpus, prepared the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .types import check_ranges


@dataclass(kw_only=True)
class DataSource:
    """One part of a blend: a prepared source folder (or raw data, prepared on the fly) and its weight."""

    # null: not set yet (a recipe leaves it to the user); a run refuses to start until it is set
    path: str | None = None
    weight: float = 1.0  # relative; a blend's weights are normalised

    def __post_init__(self) -> None:
        check_ranges(self, weight="(0, inf)")
        if self.path == "":
            raise ValueError("path: empty")


Blend = str | list[DataSource]  # a path, or a weighted list


def blend_of(value: Blend, where: str) -> list[DataSource]:
    """A `data.train` / `stages[].data` value as a list of weighted sources."""
    parts = [DataSource(path=value)] if isinstance(value, str) else list(value)
    if not parts:
        raise ValueError(f"{where}: an empty blend (give at least one source)")
    paths = [p.path for p in parts if p.path is not None]
    if len(set(paths)) != len(paths):
        raise ValueError(f"{where}: a source appears twice in {paths}")
    return parts


def stage_blends(data: DataConfig, stages: list[Any], default: str) -> list[tuple[str, list[DataSource]]]:
    """(config key, blend) of every stage: its own `data`, else `data.train`, else the source `default`."""
    out = []
    for i, stage in enumerate(stages):
        if stage.data is not None:
            out.append((f"stages[{i}].data", blend_of(stage.data, f"stages[{i}].data")))
        else:
            out.append(("data.train", blend_of(data.train if data.train is not None else default, "data.train")))
    return out


def require_paths(data: DataConfig, stages: list[Any]) -> None:
    """Refuse, before anything starts, a config whose blends leave a path unset (`path: null`, as a recipe
    does): one line naming the key and how to set it."""
    for where, parts in stage_blends(data, stages, "-"):
        for j, part in enumerate(parts):
            if part.path is None:
                dotted = where.replace("[", ".").replace("]", "")
                raise ValueError(f"{where}[{j}].path: not set; this config leaves it to you: a source prepared by "
                                 f"`nemotron-elastic prepare` (set it in the file, or override {dotted}.{j}.path=DIR)")


@dataclass(kw_only=True)
class DataConfig:
    # A prepared source, raw data, or a weighted blend of them; None: the packaged default corpus
    train: Blend | None = None
    # Held-out text for evaluation, one report per source. None: each training source's held-out split (every
    # stage's sources); raw paths are evaluated whole; a prepared source folder on its held-out split
    heldout: str | list[str] | None = None
    eval_tokens: int = 16384  # held-out tokens per source and budget at every evaluation
    workdir: str | None = None  # where raw paths are prepared (default: <out>/data)
    # all: every token counts in the loss; assistant: in chat sources (`format: messages`) only the tokens of
    # assistant turns count (text sources still count every token). The paper distils on all tokens.
    loss_on: Literal["all", "assistant"] = "all"
    # A run that would read a source's training tokens more than MAX_EPOCHS times is refused unless this is
    # true (a recipe sized for 110B tokens must not quietly loop over a small corpus).
    allow_repeat: bool = False
    # The data order's seed (window offsets, orders); None: the run's `seed`. Another order at the same seed
    # measures how much a result moves with the data order alone (the reproduction study's spread).
    order_seed: int | None = None

    def __post_init__(self) -> None:
        check_ranges(self, eval_tokens="[1, inf)", order_seed="[0, inf)")
        if self.train is not None:
            blend_of(self.train, "data.train")
        if isinstance(self.heldout, list) and not self.heldout:
            raise ValueError("heldout: an empty list (give a path, or leave it out)")
