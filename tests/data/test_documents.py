# SPDX-License-Identifier: Apache-2.0
"""User data: one loader test per format (txt, jsonl, parquet, save_to_disk arrow folder) and bad input."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import feather

from nemotron_elastic.data.documents import iter_documents, load_documents


def _one_line_error(path, match):
    with pytest.raises(ValueError, match=match) as err:
        load_documents(path)
    assert "\n" not in str(err.value)


def test_text_files_one_document_per_file(tmp_path):
    (tmp_path / "b.txt").write_text("second file\n\nwith two paragraphs\n", encoding="utf-8")
    (tmp_path / "a.md").write_text("\ufefffirst file", encoding="utf-8")  # a BOM is dropped
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / ".hidden.txt").write_text("skipped")
    (tmp_path / "notes.csv").write_text("ignored, unsupported")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "c.txt").write_text("    indented code stays\n")
    assert load_documents(tmp_path) == [
        "first file",
        "second file\n\nwith two paragraphs\n",
        "    indented code stays\n",
    ]
    assert load_documents(tmp_path / "b.txt") == ["second file\n\nwith two paragraphs\n"]


def test_jsonl(tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [{"text": "one", "id": 1}, {"text": None}, {"text": ""}, {"text": "two\nlines"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    assert load_documents(path) == ["one", "two\nlines"]
    content = tmp_path / "content.jsonl"
    content.write_text('{"content": "other field"}\n')
    assert load_documents(content, text_field="content") == ["other field"]


def test_parquet(tmp_path):
    path = tmp_path / "data.parquet"
    table = pa.table({"text": ["alpha", None, "beta", "gamma"], "n": [1, 2, 3, 4]})
    pq.write_table(table, path, row_group_size=2)
    assert load_documents(path) == ["alpha", "beta", "gamma"]


def test_save_to_disk_arrow_folder(tmp_path):
    # What `datasets.Dataset.save_to_disk` writes: Arrow IPC *stream* shards plus two JSON files.
    folder = tmp_path / "saved"
    folder.mkdir()
    shards = [["doc 0", "doc 1"], ["doc 2", None, "doc 3"]]
    for i, texts in enumerate(shards):
        table = pa.table({"text": pa.array(texts, pa.large_string()), "label": list(range(len(texts)))})
        with pa.ipc.new_stream(folder / f"data-{i:05d}-of-{len(shards):05d}.arrow", table.schema) as writer:
            writer.write_table(table)
    (folder / "state.json").write_text(
        json.dumps({"_data_files": [{"filename": "data-00000-of-00002.arrow"}]})
    )
    (folder / "dataset_info.json").write_text("{}")
    assert load_documents(folder) == ["doc 0", "doc 1", "doc 2", "doc 3"]
    # Arrow IPC *file* format (Feather v2) loads too
    feather.write_feather(pa.table({"text": ["feathered"]}), tmp_path / "f.arrow")
    assert load_documents(tmp_path / "f.arrow") == ["feathered"]


def test_mixed_folder_streams_in_path_order(tmp_path):
    (tmp_path / "1.txt").write_text("from txt")
    (tmp_path / "2.jsonl").write_text('{"text": "from jsonl"}\n')
    pq.write_table(pa.table({"text": ["from parquet"]}), tmp_path / "3.parquet")
    docs = iter_documents(tmp_path)
    assert next(docs) == "from txt"  # a generator: nothing past the first file has been read yet
    assert list(docs) == ["from jsonl", "from parquet"]


def test_bad_input_is_one_clear_line(tmp_path):
    _one_line_error(tmp_path / "missing", "no such file or folder")
    (tmp_path / "empty").mkdir()
    _one_line_error(tmp_path / "empty", r"no usable text \(the folder holds no .txt")
    blank = tmp_path / "blank"
    blank.mkdir()
    (blank / "a.txt").write_text("\n \n")
    (blank / "b.jsonl").write_text('{"text": ""}\n')
    _one_line_error(blank, "no usable text")
    (tmp_path / "x.csv").write_text("a,b")
    _one_line_error(tmp_path / "x.csv", "unsupported file type")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    _one_line_error(tmp_path / "latin1.txt", "not UTF-8")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": broken\n')
    _one_line_error(tmp_path / "bad.jsonl", r"bad.jsonl:2: not valid JSON")
    (tmp_path / "nofield.jsonl").write_text('{"body": "x"}\n')
    _one_line_error(tmp_path / "nofield.jsonl", r":1: no 'text' field")
    (tmp_path / "number.jsonl").write_text('{"text": 3}\n')
    _one_line_error(tmp_path / "number.jsonl", "is int, not a string")
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "nocol.parquet")
    _one_line_error(tmp_path / "nocol.parquet", r"no 'text' column \(columns: body\)")
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    _one_line_error(tmp_path / "ints.parquet", "not strings")
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    _one_line_error(tmp_path / "corrupt.parquet", "not a readable Parquet file")
    (tmp_path / "corrupt.arrow").write_bytes(b"\x00" * 7)
    _one_line_error(tmp_path / "corrupt.arrow", "not a readable Arrow file")
