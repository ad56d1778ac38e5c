# SPDX-License-Identifier: Apache-2.0
"""Training and held-out token files for a run, built once and reused (packed, memory-mapped).

Training text: `data.train` (text / jsonl / parquet / a folder / a `save_to_disk` folder) or the packaged
default corpus. Held-out text: `data.heldout`, else the default corpus' held-out split, else a fixed 2% of
the `data.train` documents (by document hash; a single document is split into its paragraphs first) that
are then left out of training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.corpus import default_corpus, split_documents
from ..data.documents import load_documents
from ..data.packed import PackedTokens, fingerprint_documents, pack_documents
from .config import DataConfig


def prepare_tokens(data: DataConfig, tokenizer: Any, workdir: Path, progress: bool = True) -> tuple[PackedTokens, PackedTokens]:
    """(train, heldout) packed token files for `data`, tokenized with `tokenizer` (cached in `workdir`)."""
    if data.train is None:
        train_docs, held_docs = default_corpus("train"), default_corpus("heldout")
        name = "default"
    else:
        docs = load_documents(data.train)
        if data.heldout is None and len(docs) < 2:  # one long text: hold out some of its paragraphs
            docs = [p for d in docs for p in d.split("\n\n") if p.strip()]
        if data.heldout is None:
            train_docs, held_docs = split_documents(docs, 0.02)
        else:
            train_docs = docs
        name = Path(data.train).name
    if data.heldout is not None:
        held_docs = load_documents(data.heldout)
    if not held_docs:
        raise ValueError(f"data.heldout: no held-out documents (give data.heldout, or more than one document in {data.train})")
    workdir.mkdir(parents=True, exist_ok=True)
    train = pack_documents(train_docs, tokenizer, workdir / f"{name}-train.bin", f"{name}/train:" + fingerprint_documents(train_docs),
                           progress=progress)
    held = pack_documents(held_docs, tokenizer, workdir / f"{name}-heldout.bin", f"{name}/heldout:" + fingerprint_documents(held_docs),
                          progress=progress)
    return train, held
