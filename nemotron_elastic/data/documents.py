# SPDX-License-Identifier: Apache-2.0
"""The user's own documents, read from a file or a folder.

`load_documents` / `iter_documents` read a file or a folder (searched recursively, in sorted path order,
hidden entries skipped) of
- `.txt` / `.text` / `.md`: one document per file (a file is usually one book, page or article;
  splitting on blank lines would cut plays and code into fragments);
- `.jsonl` / `.ndjson`: one JSON object per line, its `text` field is a document;
- `.parquet`: the `text` column (read with pyarrow, in batches);
- `.arrow`: the `text` column of Arrow IPC files, which is what `datasets.save_to_disk` writes
  (`data-00000-of-00001.arrow`, ...), so its folders load without the `datasets` package. A saved
  `DatasetDict` yields all its splits; point at `folder/train` for one.
User documents are returned as stored (code keeps its indentation); empty ones are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

TEXT_SUFFIXES = (".txt", ".text", ".md")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
ARROW_SUFFIXES = (".arrow",)
SUPPORTED = TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES + ARROW_SUFFIXES


def _read_text(path: Path) -> Iterator[str]:
    try:
        yield path.read_text(encoding="utf-8-sig")  # -sig: drop a byte-order mark
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None


def _read_jsonl(path: Path, field: str) -> Iterator[str]:
    with path.open(encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:  # JSONDecodeError, and UnicodeDecodeError on bad bytes
                raise ValueError(f"{path}:{lineno}: not a JSON object line") from None
            value = record.get(field) if isinstance(record, dict) else None
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{path}:{lineno}: field '{field}' is {type(value).__name__}, not a string")
            if value is None and not (isinstance(record, dict) and field in record):
                raise ValueError(f"{path}:{lineno}: no '{field}' field")
            if value:
                yield value


def _read_columnar(path: Path, field: str) -> Iterator[str]:
    import pyarrow as pa  # lazy: only user data in these formats needs pyarrow
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            parquet = pq.ParquetFile(path)
            names, batches = parquet.schema_arrow.names, parquet.iter_batches(columns=[field])
        else:
            # save_to_disk writes the IPC stream format; Feather v2 / `.arrow` files use the file format.
            try:
                table = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
            except pa.ArrowInvalid:
                table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
            names = table.schema.names
            batches = table.select([field]).to_batches() if field in names else iter(())
        if field not in names:
            raise ValueError(f"{path}: no '{field}' column (columns: {', '.join(names) or 'none'})")
        for batch in batches:
            column = batch.column(0)
            if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
                raise ValueError(f"{path}: column '{field}' holds {column.type}, not strings")
            yield from (text for text in column.to_pylist() if text)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(
            f"{path}: not a readable {path.suffix[1:]} file ({str(e).splitlines()[0]})"
        ) from None


def source_files(root: Path) -> list[Path]:
    """The data files of a file or a folder (recursive, sorted, hidden entries skipped)."""
    if root.is_file():
        if root.suffix.lower() not in SUPPORTED:
            raise ValueError(f"{root}: unsupported file type (expected {', '.join(SUPPORTED)} or a folder)")
        return [root]
    if not root.is_dir():
        raise ValueError(f"{root}: no such file or folder")
    found = (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED)
    return sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(root).parts))


def iter_documents(path: str | Path, text_field: str = "text") -> Iterator[str]:
    """Stream the documents of a user data file or folder (formats in the module docstring).

    Args:
        path: a file or a folder.
        text_field: the JSON field / column that holds the text.

    Yields:
        Non-blank documents, file by file in sorted path order.

    Raises:
        ValueError: the path is missing or unsupported, a file is malformed, or nothing usable was found.
    """
    root = Path(path)
    count = 0
    for file in source_files(root):
        suffix = file.suffix.lower()
        if suffix in TEXT_SUFFIXES:
            docs = _read_text(file)
        elif suffix in JSONL_SUFFIXES:
            docs = _read_jsonl(file, text_field)
        else:
            docs = _read_columnar(file, text_field)
        for doc in docs:
            if doc.strip():
                count += 1
                yield doc
    if count == 0:
        raise ValueError(f"{root}: no usable text (no non-empty document in {', '.join(SUPPORTED)} files)")


def load_documents(path: str | Path, text_field: str = "text") -> list[str]:
    """All documents of a user data file or folder, as a list (see `iter_documents`)."""
    return list(iter_documents(path, text_field))
