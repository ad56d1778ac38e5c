# SPDX-License-Identifier: Apache-2.0
"""Where prepare's sources come from (data/sources.py): `datasets` folders and builders, chat rows in every row
format, the packaged corpus (byte for byte its documents tokenized, each followed by EOS, as training read them
before blends; its own held-out split), and bad
sources refused in one line with nothing written (an offline Hub id among them)."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_testlib import SMALL_TEXTS

from nemotron_elastic.cli import main
from nemotron_elastic.config.prepare import PrepareConfig
from nemotron_elastic.config.types import ConfigError, from_dict
from nemotron_elastic.data.corpus import default_corpus
from nemotron_elastic.data.prepare import prepare
from nemotron_elastic.data.shards import open_source
from nemotron_elastic.data.tokenizer import encode_batch
from nemotron_elastic.io import load_tokenizer

datasets = pytest.importorskip("datasets")

DOCS = [f"{text[: 30 + 5 * i]} (row {i})" for i, text in enumerate(SMALL_TEXTS * 3)]
CHATS = [[{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]
         for i in range(6)]
CHATS[2][1]["reasoning"] = "a thought"  # the other rows' turns have none: null in Arrow, dropped when read
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m.get('reasoning', '') }}{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def run(tmp_path, srcs, tok_dir, out="out", **over):
    cfg = from_dict(PrepareConfig, {"sources": srcs, "heldout_fraction": 0.0, "shard_documents": 4, **over})
    prepare(cfg, tok_dir, tmp_path / out, progress=False)
    return {s["name"]: open_source(tmp_path / out / s["name"]) for s in srcs}


def tokens(shards):
    return np.concatenate([np.asarray(s.tokens) for s in shards]).tolist()


def masks(shards):
    return np.concatenate([np.asarray(s.mask) for s in shards]).tolist()


def test_datasets_folders_and_builders_give_the_tokens_of_their_rows(tmp_path, small_bpe):
    tok, tok_dir = small_bpe
    datasets.Dataset.from_dict({"text": DOCS}).save_to_disk(str(tmp_path / "saved"))
    split = datasets.Dataset.from_dict({"text": DOCS[:2]})
    datasets.DatasetDict({"train": split, "test": datasets.Dataset.from_dict({"text": DOCS})}).save_to_disk(
        str(tmp_path / "dict"))
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"body": d}) + "\n" for d in DOCS))
    pq.write_table(pa.table({"text": DOCS}), tmp_path / "rows.parquet")
    opened = run(tmp_path, [
        {"name": "saved", "path": str(tmp_path / "saved")},
        {"name": "dict", "path": str(tmp_path / "dict"), "split": "test"},
        {"name": "json", "path": "json", "data_files": str(tmp_path / "rows.jsonl"), "field": "body"},
        {"name": "parquet", "path": "parquet", "data_files": [str(tmp_path / "rows.parquet")]},
    ], tok_dir)
    expected = [t for ids in encode_batch(tok, DOCS) for t in ids + [tok.eos_token_id]]
    for name, source in opened.items():
        assert tokens(source.train) == expected, name
        assert source.mask is False and source.train[0].mask is None
    done = json.loads((tmp_path / "out" / "json" / "done.json").read_text())
    assert {k: done[k] for k in ("format", "mask", "vocab_size", "eos_token_id")} == {
        "format": "text", "mask": False, "vocab_size": len(tok), "eos_token_id": tok.eos_token_id}
    assert done["tokenizer"] == opened["json"].tokenizer and done["prepared_format"] == "nemotron-elastic-prepared-v1"


def test_messages_from_parquet_arrow_and_datasets_match_jsonl(tmp_path, small_bpe):
    _, plain = small_bpe
    tok = load_tokenizer(plain, required=True)
    tok.chat_template = TEMPLATE
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(str(tok_dir))
    rows = [{"messages": c} for c in CHATS]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "chat.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    srcs = [{"name": "jsonl", "path": str(tmp_path / "chat.jsonl")},
            {"name": "parquet", "path": str(tmp_path / "chat.parquet")},
            {"name": "arrow", "path": str(tmp_path / "saved")},
            {"name": "json", "path": "json", "data_files": str(tmp_path / "chat.jsonl")}]
    opened = run(tmp_path, [{**s, "format": "messages"} for s in srcs], tok_dir)
    rendered = [tok.apply_chat_template(c, tokenize=False) for c in CHATS]
    assert rendered[2] == "<|user|>Question 2?\n<|assistant|>a thoughtAnswer 2.\n"
    expected = [t for ids in encode_batch(tok, rendered) for t in ids + [tok.eos_token_id]]
    for name, source in opened.items():
        assert tokens(source.train) == expected, name
        assert masks(source.train) == masks(opened["jsonl"].train) and sum(masks(source.train)) > 0, name
    # a malformed row is skipped and counted, or refused with its file and row
    bad = [*rows[:1], {"messages": [{"role": "wizard", "content": "hi"}]}]
    pq.write_table(pa.Table.from_pylist(bad), tmp_path / "bad.parquet")
    source = {"name": "bad", "path": str(tmp_path / "bad.parquet"), "format": "messages"}
    assert run(tmp_path, [source], tok_dir, out="lenient")["bad"].train[0].ends == [len(encode_batch(tok, rendered[:1])[0]) + 1]
    assert json.loads((tmp_path / "lenient" / "bad" / "done.json").read_text())["skipped"] == 1
    with pytest.raises(ValueError, match=r"bad.parquet:2: unknown role 'wizard'"):
        run(tmp_path, [{**source, "strict": True}], tok_dir, out="strict")


def packed(tok, docs) -> np.ndarray:
    """The documents tokenized, each followed by EOS, as uint16: the token stream training read before blends."""
    return np.array([t for ids in encode_batch(tok, docs) for t in (*ids, tok.eos_token_id)], dtype="<u2")


def test_the_packaged_corpus_is_its_documents_packed(tmp_path, small_bpe):
    tok, tok_dir = small_bpe
    opened = run(tmp_path, [{"name": "default", "path": "packaged:default", "max_documents": 3}], tok_dir,
                 heldout_fraction=0.5, shard_documents=2)["default"]
    for split, shards in (("train", opened.train), ("heldout", opened.heldout)):
        assert sum(len(s) for s in shards) == 3 and len(shards) == 2  # its own split, not the hash rule
        assert tokens(shards) == packed(tok, default_corpus(split)[:3]).tolist(), split


@pytest.mark.slow
def test_the_whole_packaged_corpus_is_its_documents_packed(tmp_path, small_bpe):
    tok, tok_dir = small_bpe
    opened = run(tmp_path, [{"name": "default", "path": "packaged:default"}], tok_dir, shard_documents=4096)["default"]
    for split, shards in (("train", opened.train), ("heldout", opened.heldout)):
        assert b"".join(np.asarray(s.tokens).tobytes() for s in shards) == packed(tok, default_corpus(split)).tobytes()


def test_bad_sources_are_one_line_and_write_nothing(tmp_path, small_bpe, monkeypatch, capsys):
    _, tok_dir = small_bpe
    # offline (and no network here anyway): set for datasets and huggingface_hub, which read it on import
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    (tmp_path / "rows.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    (tmp_path / "empty.jsonl").write_text("\n")
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "rows.parquet")
    cases = [
        ({"name": "wiki", "path": "x/y"}, r"^sources: wiki: cannot load dataset 'x/y' \(offline or not found: "),
        ({"name": "d", "path": "packaged:nope"}, r"sources: d: unknown packaged corpus 'packaged:nope' \(choose from"),
        ({"name": "j", "path": str(tmp_path / "rows.jsonl")}, r"rows.jsonl:1: no 'text' field"),
        ({"name": "p", "path": str(tmp_path / "rows.parquet")}, r"rows.parquet: no 'text' column \(columns: body\)"),
        ({"name": "h", "path": "json", "data_files": str(tmp_path / "rows.jsonl")},
         r"sources: h: dataset 'json' has no 'text' column \(columns: body\)"),
        ({"name": "e", "path": str(tmp_path / "empty.jsonl")}, "no usable text"),
        ({"name": "m", "path": str(tmp_path / "nowhere" / "a.jsonl")}, "sources: m: .* does not exist"),
    ]
    for source, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            run(tmp_path, [source], tok_dir)
        assert "\n" not in str(err.value) and not (tmp_path / "out").exists(), source
    for source, message in [({"format": "messages"}, r"sources\[0\].format: a packaged corpus"),
                            ({"split": "test"}, r"sources\[0\].split: not for a packaged corpus"),
                            ({"data_files": 3}, r"sources\[0\].data_files: expected str or list\[str\] or None")]:
        with pytest.raises(ConfigError, match=message):
            run(tmp_path, [{"name": "d", "path": "packaged:default", **source}], tok_dir)
    (tmp_path / "data.yaml").write_text("sources: [{name: wiki, path: x/y}]\n")
    assert main(["prepare", "--config", str(tmp_path / "data.yaml"), "--tokenizer", str(tok_dir), "--out",
                 str(tmp_path / "cli"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot load dataset 'x/y'" in err and not (tmp_path / "cli").exists()
