# SPDX-License-Identifier: Apache-2.0
"""The user's own documents and rows, read from a file or a folder (no `datasets` package needed).

`load_documents` / `iter_documents` read the documents of a file or a folder (searched recursively, in
sorted path order, hidden entries skipped) of
- `.txt` / `.text` / `.md`: one document per file (a file is usually one book, page or article;
  splitting on blank lines would cut plays and code into fragments);
- `.jsonl` / `.ndjson`: one JSON object per line, its `text` field is a document;
- `.parquet`: the `text` column (read with pyarrow, in batches);
- `.arrow`: the `text` column of Arrow IPC files, which is what `datasets.save_to_disk` writes
  (`data-00000-of-00001.arrow`, ...), so its folders load without the `datasets` package. A saved
  `DatasetDict` yields all its splits; point at `folder/train` for one.
User documents are returned as stored (code keeps its indentation); empty ones are dropped.

`iter_records` reads any field of the row formats (jsonl, parquet, arrow) as stored, e.g. the list of
{role, content} turns of a chat row, with each row's place ("file:line" / "file:row") for messages, and
what is wrong with a row, so that its caller can skip and count malformed rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEXT_SUFFIXES = (".txt", ".text", ".md")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
ARROW_SUFFIXES = (".arrow",)
SUPPORTED = TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES + ARROW_SUFFIXES
ROW_SUFFIXES = JSONL_SUFFIXES + PARQUET_SUFFIXES + ARROW_SUFFIXES
_KIND = {".parquet": "Parquet", ".arrow": "Arrow"}


def _read_text(path: Path) -> Iterator[str]:
    try:
        yield path.read_text(encoding="utf-8-sig")  # -sig: drop a byte-order mark
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None


def _jsonl_rows(path: Path, field: str) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, the field's value, what is wrong with the line or None) of each non-blank line."""
    lineno = 0
    with path.open(encoding="utf-8-sig") as f:
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    yield lineno, None, "not valid JSON"
                    continue
                if not isinstance(record, dict):
                    yield lineno, None, "not a JSON object"
                elif field not in record:
                    yield lineno, None, f"no '{field}' field"
                else:
                    yield lineno, record[field], None
        except UnicodeDecodeError:
            raise ValueError(f"{path}:{lineno + 1}: not UTF-8 text") from None


def _read_jsonl(path: Path, field: str) -> Iterator[str]:
    for lineno, value, problem in _jsonl_rows(path, field):
        if problem is not None:
            hint = f" (each line must be a JSON object with a string '{field}' field)" if "field" in problem else ""
            raise ValueError(f"{path}:{lineno}: {problem}{hint}")
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{path}:{lineno}: field '{field}' is {type(value).__name__}, not a string")
        if value:
            yield value


def _columns(path: Path, field: str) -> Iterator[Any]:
    """The `field` column of a Parquet or Arrow file, one pyarrow array per batch."""
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
            yield batch.column(0)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(
            f"{path}: not a readable {_KIND[path.suffix.lower()]} file ({str(e).splitlines()[0]})"
        ) from None


def _read_columnar(path: Path, field: str) -> Iterator[str]:
    import pyarrow as pa

    for column in _columns(path, field):
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise ValueError(f"{path}: column '{field}' holds {column.type}, not strings")
        yield from (text for text in column.to_pylist() if text)


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
    files = source_files(root)
    for file in files:
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
        found = "every document is empty" if files else f"the folder holds no {', '.join(SUPPORTED)} file"
        raise ValueError(f"{root}: no usable text ({found})")


def load_documents(path: str | Path, text_field: str = "text") -> list[str]:
    """All documents of a user data file or folder, as a list (see `iter_documents`)."""
    return list(iter_documents(path, text_field))


def iter_records(path: str | Path, field: str) -> Iterator[tuple[Path, int, Any, str | None]]:
    """Stream one field of every row of the jsonl / parquet / arrow files at `path`, as stored.

    Args:
        path: a file or a folder (text files in it are refused: they have no rows).
        field: the JSON field / column.

    Yields:
        (file, line number (jsonl) or row number from 1 (columnar), the field's value, what is wrong with
        the row or None): a jsonl line that is not a JSON object or lacks the field is yielded with its
        problem, not raised, so that the caller may skip it.

    Raises:
        ValueError: a missing path, a text file, an unreadable file or a columnar file without the column.
    """
    for file in source_files(Path(path)):
        suffix = file.suffix.lower()
        if suffix not in ROW_SUFFIXES:
            raise ValueError(f"{file}: rows are read from {', '.join(ROW_SUFFIXES)} files, not {suffix}")
        if suffix in JSONL_SUFFIXES:
            for lineno, value, problem in _jsonl_rows(file, field):
                yield file, lineno, value, problem
            continue
        row = 0
        for column in _columns(file, field):
            for value in column.to_pylist():
                row += 1
                yield file, row, value, None
