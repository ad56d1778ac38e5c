# SPDX-License-Identifier: Apache-2.0
"""Where a `prepare` source's rows come from (config/prepare.py `SourceConfig`), streamed in order.

    packaged:NAME      a corpus shipped with the package (data/corpus.py): `default` (Shakespeare and
                       Wikipedia), `shakespeare` or `wikipedia`; its train documents, then its held-out
                       ones, each with its corpus split (not the hash rule of prepare.py)
    an existing path   a file or folder read by data/documents.py; a saved `DatasetDict` folder with
                       `split` reads that split's folder (no `datasets` package needed)
    anything else      `datasets.load_dataset(path, name=config_name, split=split or "train",
                       data_files=..., streaming=True)` (the `[data]` extra): a Hub id, or a builder such
                       as `json` / `parquet` with `data_files`; also a local path given `split`,
                       `data_files` or `config_name`

`check` opens a source and reads its first row, so that a missing path, an unknown packaged corpus, a
dataset that cannot be loaded (offline, or not on the Hub) or a missing column fails in one line before
`prepare` writes anything. Messages rows come with their place ("file:line", "dataset[split]:row").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config.prepare import SourceConfig
from ..io import import_extra
from .corpus import default_corpus
from .documents import SUPPORTED, iter_documents, iter_records

PACKAGED = {"default": ("shakespeare", "wikipedia"), "shakespeare": ("shakespeare",), "wikipedia": ("wikipedia",)}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")  # "name" or "owner/name"


def kind(source: SourceConfig) -> str:
    """"packaged", "local", "split" (a saved DatasetDict's split folder), "datasets" or "missing"."""
    if source.packaged is not None:
        return "packaged"
    path = Path(source.path)
    if path.exists():
        if source.split is not None and (path / "dataset_dict.json").is_file():
            return "split"
        if source.split is None and source.data_files is None and source.config_name is None:
            return "local"
        return "datasets"
    if source.data_files is not None or (_HUB_ID.match(source.path) and path.suffix.lower() not in SUPPORTED):
        return "datasets"
    return "missing"


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _dataset(source: SourceConfig) -> Iterator[dict[str, Any]]:
    """The rows of a `datasets` source; loading errors (offline, not found, no such split) are one line."""
    datasets = import_extra("datasets", f"sources: {source.name}: the dataset '{source.path}'")
    args = {"name": source.config_name, "split": source.split or "train", "data_files": source.data_files}
    try:
        try:
            ds = datasets.load_dataset(source.path, streaming=True, **args)
        except NotImplementedError:  # a builder that cannot stream: loaded (and cached) whole
            ds = datasets.load_dataset(source.path, **args)
        rows = iter(ds)
        first = next(rows, None)  # a streamed dataset resolves its files lazily: fail here, not mid-prepare
    except Exception as e:  # noqa: BLE001 - datasets, huggingface_hub, fsspec and pyarrow each raise their own
        raise ValueError(f"sources: {source.name}: cannot load dataset '{source.path}' "
                         f"(offline or not found: {_first_line(e)})") from None
    if first is None:
        return
    if source.field not in first:
        raise ValueError(f"sources: {source.name}: dataset '{source.path}' has no '{source.field}' column "
                         f"(columns: {', '.join(first) or 'none'})")
    yield first
    number = 1
    while True:
        try:
            row = next(rows, None)
        except Exception as e:  # noqa: BLE001 - a stream that breaks (network, a corrupt file)
            raise ValueError(f"sources: {source.name}: reading dataset '{source.path}' failed after row "
                             f"{number} ({_first_line(e)})") from None
        if row is None:
            return
        number += 1
        yield row


def _local_path(source: SourceConfig) -> Path:
    return Path(source.path) / source.split if kind(source) == "split" else Path(source.path)


def texts(source: SourceConfig) -> Iterator[tuple[str, str | None]]:
    """(document, its fixed split or None) of a text source, in order (empty documents are dropped).

    Raises:
        ValueError: the source cannot be read (see `check`), a malformed file or row, or no usable text.
    """
    where = kind(source)
    if where == "packaged":
        for split in ("train", "heldout"):
            for doc in default_corpus(split, sources=_packaged(source)):
                yield doc, split
    elif where in ("local", "split"):
        for doc in iter_documents(_local_path(source), source.field):
            yield doc, None
    elif where == "datasets":
        for number, row in enumerate(_dataset(source), 1):
            value = row[source.field]
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{source.path}[{source.split or 'train'}]:{number}: field '{source.field}' is "
                                 f"{type(value).__name__}, not a string")
            if value and value.strip():
                yield value, None
    else:
        raise ValueError(f"sources: {source.name}: {source.path} does not exist")


def records(source: SourceConfig) -> Iterator[tuple[str, Any, str | None]]:
    """(where, the field's value, what is wrong with the row or None) of each row of a messages source."""
    where = kind(source)
    if where in ("local", "split"):
        for file, number, value, problem in iter_records(_local_path(source), source.field):
            yield f"{file}:{number}", value, problem
    elif where == "datasets":
        for number, row in enumerate(_dataset(source), 1):
            yield f"{source.path}[{source.split or 'train'}]:{number}", row[source.field], None
    else:
        raise ValueError(f"sources: {source.name}: {source.path} does not exist")


def _packaged(source: SourceConfig) -> tuple[str, ...]:
    if source.packaged not in PACKAGED:
        raise ValueError(f"sources: {source.name}: unknown packaged corpus '{source.path}' "
                         f"(choose from {', '.join('packaged:' + k for k in PACKAGED)})")
    return PACKAGED[source.packaged]


def check(source: SourceConfig) -> None:
    """Open the source and read its first row (module docstring); raises a one-line ValueError."""
    if kind(source) == "packaged":
        default_corpus("heldout", sources=_packaged(source))  # reads (and caches) the corpus: a missing package
        return
    stream = texts(source) if source.format == "text" else records(source)
    first = next(stream, None)
    stream.close()
    if first is None:
        raise ValueError(f"sources: {source.name}: no documents in {source.path}")
