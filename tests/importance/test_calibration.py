# SPDX-License-Identifier: Apache-2.0
"""Calibration samples: text / jsonl / parquet / folders, EOS between documents, determinism, bad input."""

import json

import pytest
import torch
from importance_testlib import SAMPLE_TEXT, tiny_tokenizer, write_text

from nemotron_elastic.data.calibration import (
    calibration_samples,
    read_documents,
    sample_windows,
    tokenize_documents,
)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer(300)


def _write_parquet(path, column: str, values: list) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({column: values}), path)


def test_formats_and_folders(tmp_path):
    write_text(tmp_path, "a.txt", "first document")
    write_text(
        tmp_path, "b.jsonl", json.dumps({"text": "second"}) + "\n\n" + json.dumps({"text": "third", "id": 3})
    )
    (tmp_path / "sub").mkdir()
    _write_parquet(tmp_path / "sub" / "c.parquet", "text", ["fourth", None, "fifth"])
    write_text(tmp_path, "ignored.csv", "not read")
    write_text(tmp_path, "blank.txt", "  \n")
    assert read_documents(tmp_path) == ["first document", "second", "third", "fourth", "fifth"]
    assert read_documents(tmp_path / "b.jsonl") == ["second", "third"]


def test_eos_between_documents(tokenizer):
    stream = tokenize_documents(["the fox", "the dog"], tokenizer)
    eos = tokenizer.eos_token_id
    one = tokenizer("the fox", add_special_tokens=False)["input_ids"]
    two = tokenizer("the dog", add_special_tokens=False)["input_ids"]
    assert stream.tolist() == one + [eos] + two


def test_deterministic_windows(tmp_path, tokenizer):
    path = write_text(tmp_path, "t.txt", SAMPLE_TEXT)
    a = calibration_samples(path, tokenizer, 4, 16, seed=0)
    b = calibration_samples(path, tokenizer, 4, 16, seed=0)
    c = calibration_samples(path, tokenizer, 4, 16, seed=1)
    assert a.shape == (4, 16) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    stream = tokenize_documents([SAMPLE_TEXT], tokenizer)
    starts = set()
    for row in a:  # every window is a contiguous, disjoint slice of the stream
        hits = [s for s in range(0, stream.numel() - 15, 16) if torch.equal(stream[s : s + 16], row)]
        assert hits, "window is not an aligned slice of the stream"
        starts.add(hits[0])
    assert len(starts) == 4


def test_too_little_data_for_disjoint_windows_overlaps():
    stream = torch.arange(20)
    windows = sample_windows(stream, 5, 8, seed=3)
    assert windows.shape == (5, 8)
    for row in windows:
        assert torch.equal(row, torch.arange(row[0].item(), row[0].item() + 8))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.txt", "no such data file"),
        (lambda d: write_text(d, "empty.txt", "   \n"), "no usable text"),
        (lambda d: (d / "empty_dir").mkdir() or d / "empty_dir", "holds no"),
        (lambda d: write_text(d, "bad.jsonl", '{"text": "ok"}\n{not json\n'), r"bad.jsonl:2: not valid JSON"),
        (lambda d: write_text(d, "nofield.jsonl", '{"content": "x"}\n'), "string 'text' field"),
        (lambda d: (d / "bin.txt").write_bytes(b"\xff\xfe\x00bad") and d / "bin.txt", "not UTF-8"),
        (
            lambda d: (d / "x.parquet").write_bytes(b"not parquet") and d / "x.parquet",
            "not a readable Parquet",
        ),
        (lambda d: write_text(d, "short.txt", "the fox"), "fewer than one sample"),
    ],
)
def test_bad_input_is_one_clear_value_error(tmp_path, tokenizer, make, message):
    with pytest.raises(ValueError, match=message) as err:
        calibration_samples(make(tmp_path), tokenizer, 2, 64)
    assert "\n" not in str(err.value)


def test_parquet_without_text_column(tmp_path, tokenizer):
    _write_parquet(tmp_path / "p.parquet", "body", ["a", "b"])
    with pytest.raises(ValueError, match="text"):
        read_documents(tmp_path / "p.parquet")


def test_bad_sizes():
    with pytest.raises(ValueError, match="positive"):
        sample_windows(torch.arange(100), 0, 8)
